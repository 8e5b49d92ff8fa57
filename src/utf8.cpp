// SPDX-License-Identifier: LGPL-2.1-or-later
#include "utf8.h"

#include <fmt/format.h>

namespace udpintercept::detail {

std::size_t utf8_sequence(std::string_view text) noexcept
{
	const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
	const unsigned char b0 = byte(0);
	if (b0 < 0x80)
		return 1;
	std::size_t len;
	unsigned char lo = 0x80, hi = 0xbf; // the range of the second byte
	if (b0 >= 0xc2 && b0 <= 0xdf) {
		len = 2;
	} else if (b0 >= 0xe0 && b0 <= 0xef) {
		len = 3;
		if (b0 == 0xe0)
			lo = 0xa0; // overlong
		else if (b0 == 0xed)
			hi = 0x9f; // surrogates
	} else if (b0 >= 0xf0 && b0 <= 0xf4) {
		len = 4;
		if (b0 == 0xf0)
			lo = 0x90; // overlong
		else if (b0 == 0xf4)
			hi = 0x8f; // above U+10FFFF
	} else {
		return 0;
	}
	if (text.size() < len || byte(1) < lo || byte(1) > hi)
		return 0;
	for (std::size_t i = 2; i < len; i++)
		if (byte(i) < 0x80 || byte(i) > 0xbf)
			return 0;
	return len;
}

void append_json_text(std::string &out, std::string_view text)
{
	while (!text.empty()) {
		const unsigned char c = static_cast<unsigned char>(text.front());
		const std::size_t n = utf8_sequence(text);
		if (n == 0) {
			out += "\xef\xbf\xbd"; // U+FFFD REPLACEMENT CHARACTER
			text.remove_prefix(1);
			continue;
		}
		if (c == '"' || c == '\\') {
			out += '\\';
			out += static_cast<char>(c);
		} else if (c < 0x20 || c == 0x7f) {
			out += fmt::format("\\u{:04x}", c);
		} else {
			out.append(text.substr(0, n));
		}
		text.remove_prefix(n);
	}
}

std::string escape_utf8(std::string_view text)
{
	std::string out;
	while (!text.empty()) {
		const unsigned char c = static_cast<unsigned char>(text.front());
		const std::size_t n = utf8_sequence(text);
		if (n == 0 || c < 0x20 || c == 0x7f) {
			out += fmt::format("\\x{:02x}", c);
			text.remove_prefix(1);
			continue;
		}
		out.append(text.substr(0, n));
		text.remove_prefix(n);
	}
	return out;
}

} // namespace udpintercept::detail
