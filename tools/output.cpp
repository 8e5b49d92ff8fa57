// SPDX-License-Identifier: LGPL-2.1-or-later
#include "output.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <sys/stat.h>
#include <unistd.h>

namespace udpintercept::cli {

namespace {

// What one write may carry to a file (to anything else: PIPE_BUF).
constexpr std::size_t kFileChunk = 1 << 16;

} // namespace

Output::Output(int fd) : fd_(fd), chunk_(PIPE_BUF)
{
	struct stat st {};
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		chunk_ = kFileChunk;
}

void Output::add(std::string_view line)
{
	if (error_)
		return;
	buf_.append(line);
	buf_.push_back('\n');
}

std::size_t Output::pending_lines() const noexcept
{
	return static_cast<std::size_t>(
		std::count(buf_.begin() + static_cast<std::ptrdiff_t>(off_), buf_.end(), '\n'));
}

bool Output::write_some()
{
	if (error_)
		return false;
	if (off_ == buf_.size())
		return true;
	// Whole lines up to chunk_ bytes; a longer first line alone.
	std::size_t end = buf_.size();
	if (end - off_ > chunk_) {
		const std::size_t last = buf_.rfind('\n', off_ + chunk_ - 1);
		end = last != std::string::npos && last >= off_ ? last + 1 : buf_.find('\n', off_) + 1;
	}
	ssize_t n;
	do
		n = ::write(fd_, buf_.data() + off_, end - off_);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN)
			return true;
		error_ = errno;
		discard();
		return false;
	}
	off_ += static_cast<std::size_t>(n);
	if (off_ == buf_.size()) {
		buf_.clear();
		off_ = 0;
	} else if (off_ >= buf_.size() / 2) {
		buf_.erase(0, off_);
		off_ = 0;
	}
	return true;
}

void Output::discard() noexcept
{
	buf_.clear();
	off_ = 0;
}

} // namespace udpintercept::cli
