// SPDX-License-Identifier: LGPL-2.1-or-later
#include "libbpf_log.h"

#include <cstdarg>
#include <cstdio>

namespace udpintercept::detail {

namespace {

std::mutex g_mutex; // one capture at a time
std::mutex g_print; // one message at a time: a load verifies on two threads
std::string *g_capture = nullptr;
const std::function<void(std::string_view)> *g_log = nullptr;

int print(enum libbpf_print_level level, const char *format, va_list args) noexcept
{
	if (level == LIBBPF_DEBUG)
		return 0;
	// A verifier log arrives as one message of any length: format it whole.
	va_list again;
	va_copy(again, args);
	const int n = vsnprintf(nullptr, 0, format, args);
	std::string buf;
	try {
		buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
	} catch (...) {
	}
	if (!buf.empty())
		vsnprintf(buf.data(), buf.size() + 1, format, again);
	va_end(again);
	try {
		const std::lock_guard lock(g_print);
		if (g_capture)
			g_capture->append(buf);
		if (g_log && *g_log) {
			std::string_view line(buf);
			while (!line.empty() && line.back() == '\n')
				line.remove_suffix(1);
			(*g_log)(line);
		}
	} catch (...) {
	}
	return n;
}

} // namespace

LibbpfCapture::LibbpfCapture(const std::function<void(std::string_view)> &log) : lock_(g_mutex)
{
	g_capture = &text_;
	g_log = &log;
	previous_ = libbpf_set_print(print);
}

LibbpfCapture::~LibbpfCapture()
{
	libbpf_set_print(previous_);
	g_capture = nullptr;
	g_log = nullptr;
}

std::string LibbpfCapture::tail(std::size_t lines) const
{
	if (text_.empty())
		return {}; // libbpf said nothing (a failure of a call it does not log)
	std::size_t pos = text_.size();
	for (std::size_t i = 0; i <= lines && pos != std::string::npos && pos > 0; i++)
		pos = text_.rfind('\n', pos - 1);
	return pos == std::string::npos ? text_ : text_.substr(pos + 1);
}

} // namespace udpintercept::detail
