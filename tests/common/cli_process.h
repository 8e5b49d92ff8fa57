// SPDX-License-Identifier: LGPL-2.1-or-later
// The real CLI as a child process, its stderr (and stdout, unless a test
// wants it elsewhere) read through pipes, for the tiers that test what a
// user of the command sees: exit status, messages and output under faults.
#pragma once

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <functional>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "testutil.h"

namespace testutil {

/// `args` with `--backend` of the backend under test (test_backend()), unless they name one.
inline std::vector<std::string> with_test_backend(std::vector<std::string> args)
{
	for (const auto &a : args)
		if (a == "--backend" || a == "--help")
			return args;
	args.push_back("--backend");
	args.push_back(test_backend());
	return args;
}

class CliProcess {
public:
	/// Where the child's stdout goes.
	enum class Stdout { pipe, dev_full, dev_null };

	/// Runs `path` with `args` (nothing added); `setup` runs in the child
	/// before exec (a mount namespace of its own, say) and returns false to
	/// make the child exit 121.
	CliProcess(const std::string &path, std::vector<std::string> args, Stdout out = Stdout::pipe,
		   std::function<bool()> setup = {})
	{
		int o[2] = {-1, -1}, e[2];
		if ((out == Stdout::pipe && pipe2(o, O_CLOEXEC) != 0) || pipe2(e, O_CLOEXEC) != 0)
			die("pipe2");
		pid_ = fork();
		if (pid_ < 0)
			die("fork");
		if (pid_ == 0) {
			int fd = o[1];
			if (out == Stdout::dev_full)
				fd = open("/dev/full", O_WRONLY);
			else if (out == Stdout::dev_null)
				fd = open("/dev/null", O_WRONLY);
			dup2(fd, 1);
			dup2(e[1], 2);
			if (setup && !setup())
				_exit(121);
			std::vector<char *> argv{const_cast<char *>(path.c_str())};
			for (auto &a : args)
				argv.push_back(a.data());
			argv.push_back(nullptr);
			execv(argv[0], argv.data());
			_exit(127);
		}
		if (o[1] >= 0)
			close(o[1]);
		close(e[1]);
		out_ = o[0];
		err_ = e[0];
	}
	CliProcess(const CliProcess &) = delete;
	CliProcess &operator=(const CliProcess &) = delete;
	~CliProcess()
	{
		if (pid_ > 0 && !exited_) {
			kill(pid_, SIGKILL);
			waitpid(pid_, nullptr, 0);
		}
		close_stdout();
		close(err_);
	}

	pid_t pid() const { return pid_; }

	/// Reads stderr (and stdout, if read) until `needle` is in stderr or the deadline.
	bool wait_stderr(const std::string &needle, std::chrono::milliseconds deadline)
	{
		const auto end = std::chrono::steady_clock::now() + deadline;
		while (err_text.find(needle) == std::string::npos) {
			if (std::chrono::steady_clock::now() >= end || err_closed_)
				return false; // the deadline, or the process is gone
			pump(50);
		}
		return true;
	}

	/// Reads output until `done()` holds or the deadline; whether it held.
	template <typename Done> bool wait_until(Done done, std::chrono::milliseconds deadline)
	{
		const auto end = std::chrono::steady_clock::now() + deadline;
		while (!done()) {
			if (std::chrono::steady_clock::now() >= end)
				return false;
			pump(50);
		}
		return true;
	}

	/// Waits for the exit, reading everything; the exit status, -2 if a
	/// signal ended it (signaled() says which), -1 on the deadline.
	int wait_exit(std::chrono::milliseconds deadline)
	{
		const auto end = std::chrono::steady_clock::now() + deadline;
		while (std::chrono::steady_clock::now() < end) {
			pump(20);
			int status = 0;
			if (waitpid(pid_, &status, WNOHANG) == pid_) {
				exited_ = true;
				while (pump(0)) {
				}
				if (WIFSIGNALED(status)) {
					signal_ = WTERMSIG(status);
					return -2;
				}
				return WEXITSTATUS(status);
			}
		}
		return -1;
	}

	int signaled() const { return signal_; }
	void signal(int sig) { kill(pid_, sig); }

	/// Stops reading stdout, as a reader that stalls does (the pipe fills).
	void stall_stdout(bool stalled) { stalled_ = stalled; }

	/// Closes the read end of stdout's pipe, as `| head -1` does when done.
	void close_stdout()
	{
		if (out_ >= 0)
			close(out_);
		out_ = -1;
	}

	/// stdout's complete lines so far.
	std::vector<std::string> lines() const
	{
		std::vector<std::string> out;
		std::size_t pos = 0;
		for (std::size_t nl; (nl = out_text.find('\n', pos)) != std::string::npos; pos = nl + 1)
			out.push_back(out_text.substr(pos, nl - pos));
		return out;
	}

	/// stdout's complete lines as the CLI's JSON objects.
	std::vector<JsonObject> json_lines() const
	{
		std::vector<JsonObject> out;
		for (const auto &line : lines())
			out.push_back(parse_json_line(line));
		return out;
	}

	std::string out_text, err_text;

private:
	bool pump(int timeout_ms)
	{
		pollfd fds[2] = {{stalled_ ? -1 : out_, POLLIN, 0}, {err_closed_ ? -1 : err_, POLLIN, 0}};
		if (::poll(fds, 2, timeout_ms) <= 0)
			return false;
		bool got = false;
		char buf[65536];
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
				continue;
			const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
			if (n > 0) {
				(i == 0 ? out_text : err_text).append(buf, static_cast<std::size_t>(n));
				got = true;
			} else if (n == 0 && i == 1) {
				err_closed_ = true;
			}
		}
		return got;
	}

	pid_t pid_ = -1;
	int out_ = -1, err_ = -1;
	bool exited_ = false, stalled_ = false, err_closed_ = false;
	int signal_ = 0;
};

} // namespace testutil
