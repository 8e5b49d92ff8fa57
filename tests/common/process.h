// SPDX-License-Identifier: LGPL-2.1-or-later
// A program run by a test, its stdout and stderr read through pipes, waited
// for with deadlines.
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

namespace testutil {

class Process {
public:
	/// Runs argv[0] (a path) with `argv`.
	explicit Process(std::vector<std::string> argv)
	    : Process(std::function<int()>([&argv] {
		      std::vector<char *> args;
		      for (auto &a : argv)
			      args.push_back(a.data());
		      args.push_back(nullptr);
		      execv(args[0], args.data());
		      return 127;
	      }))
	{
	}

	/// Runs `body` in a forked child, which exits with what it returns.
	explicit Process(const std::function<int()> &body)
	{
		int out[2], err[2];
		if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
			throw std::runtime_error("pipe2 failed");
		pid_ = fork();
		if (pid_ < 0)
			throw std::runtime_error("fork failed");
		if (pid_ == 0) {
			dup2(out[1], 1);
			dup2(err[1], 2);
			_exit(body());
		}
		close(out[1]);
		close(err[1]);
		out_ = out[0];
		err_ = err[0];
	}
	~Process()
	{
		if (pid_ > 0 && !exited_) {
			kill(pid_, SIGKILL);
			waitpid(pid_, nullptr, 0);
		}
		close(out_);
		close(err_);
	}
	Process(const Process &) = delete;
	Process &operator=(const Process &) = delete;

	pid_t pid() const { return pid_; }
	void signal(int sig) { kill(pid_, sig); }

	/// Reads until `done()` holds, the deadline passes or both pipes are closed; returns done().
	bool wait_for(const std::function<bool()> &done, std::chrono::milliseconds timeout)
	{
		const auto end = std::chrono::steady_clock::now() + timeout;
		while (!done() && !(out_eof_ && err_eof_) && std::chrono::steady_clock::now() < end)
			pump(50);
		return done();
	}

	/// Reads stdout until it holds `needle` `times` times (or the deadline).
	bool wait_stdout(const std::string &needle, std::chrono::milliseconds timeout, int times = 1)
	{
		return wait_for([&] { return count(out_text, needle) >= times; }, timeout);
	}

	/// Reads stderr until it holds `needle` `times` times (or the deadline).
	bool wait_stderr(const std::string &needle, std::chrono::milliseconds timeout, int times = 1)
	{
		return wait_for([&] { return count(err_text, needle) >= times; }, timeout);
	}

	/// Waits for the exit, reading all output; the exit status, or -1 (signal, timeout).
	int wait_exit(std::chrono::milliseconds timeout)
	{
		const auto end = std::chrono::steady_clock::now() + timeout;
		int status = 0;
		while (std::chrono::steady_clock::now() < end) {
			pump(20);
			if (waitpid(pid_, &status, WNOHANG) == pid_) {
				exited_ = true;
				while (pump(0)) {
				}
				return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
			}
		}
		return -1;
	}

	static int count(const std::string &text, const std::string &needle)
	{
		int n = 0;
		for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
			n++;
		return n;
	}

	std::string out_text, err_text;

private:
	// Returns whether anything was read.
	bool pump(int timeout_ms)
	{
		pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
		if (::poll(fds, 2, timeout_ms) <= 0)
			return false;
		bool got = false;
		char buf[65536];
		for (int i = 0; i < 2; i++) {
			if (!(fds[i].revents & (POLLIN | POLLHUP)))
				continue;
			const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
			if (n > 0) {
				(i == 0 ? out_text : err_text).append(buf, static_cast<std::size_t>(n));
				got = true;
			} else if (n == 0) {
				(i == 0 ? out_eof_ : err_eof_) = true;
			}
		}
		return got;
	}

	pid_t pid_ = -1;
	int out_ = -1, err_ = -1;
	bool exited_ = false;
	bool out_eof_ = false, err_eof_ = false;
};

} // namespace testutil
