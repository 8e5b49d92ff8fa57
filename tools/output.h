// SPDX-License-Identifier: LGPL-2.1-or-later
// The CLI's stdout: whole lines, written only when the descriptor says it
// can take them, so that a reader that stops reading never blocks the CLI
// (a signal or the end of --duration still stops it).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace udpintercept::cli {

class Output {
public:
	/// Output to `fd`, a pipe, socket, terminal or file.
	explicit Output(int fd);

	/// Queues one line (the newline is added).
	void add(std::string_view line);

	/// Bytes queued and not yet written.
	std::size_t pending() const noexcept { return buf_.size() - off_; }

	/// Lines queued and not yet written.
	std::size_t pending_lines() const noexcept;

	/// One write of whole lines from the queue, for a descriptor poll()
	/// found writable: at most a pipe's atomic size to a pipe, socket or
	/// terminal, which then takes it whole without blocking (a longer line
	/// goes alone), as much as is queued to a file. False on a write error,
	/// whose errno error() keeps; nothing is written after it.
	bool write_some();

	/// The first write error (EPIPE, ENOSPC, ...), 0 if none.
	int error() const noexcept { return error_; }

	/// The queue is dropped (the reader stopped reading).
	void discard() noexcept;

	/// An error found otherwise (poll() saw the reader gone): as a write's.
	void add_error(int err) noexcept
	{
		if (!error_)
			error_ = err;
		discard();
	}

private:
	int fd_;
	std::size_t chunk_;
	std::string buf_;
	std::size_t off_ = 0;
	int error_ = 0;
};

} // namespace udpintercept::cli
