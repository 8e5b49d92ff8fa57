// SPDX-License-Identifier: LGPL-2.1-or-later
// Shutdown of libudpEvent.so as legacy consumers do it, through dlopen():
//
//   blocked    threads blocked in DequeuePerfEvent() each get a zeroed event
//              promptly when cleanup() is called; cleanup() twice is
//              harmless; dlclose() then unloads the library and leaves no
//              thread behind
//   signal     the legacy example's SIGINT handler (cleanup(), dlclose(),
//              exit()) interrupting a DequeuePerfEvent() exits cleanly
//   exit       exit() while a thread is blocked in DequeuePerfEvent() and
//              without cleanup(): the library stops its thread and the
//              process exits
//   error      an AddProbe() that cannot attach says why on stderr, at once,
//              and getStatus() stays 0
//   shed       (root) a full queue sheds the oldest events, counts them and
//              says so on stderr at most once a second
//   untracked  (root) traffic a full flow table turns away is counted and
//              said on stderr
//
// With "attached", blocked, signal and exit run with the tracer attached
// (root).
//
// usage: compat_shutdown LIBUDPEVENT_SO blocked|signal|exit|error|shed|untracked [attached]
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "common.h"
#include "testutil.h"

namespace {

using Clock = std::chrono::steady_clock;

int failures = 0;

#define CHECK(cond, ...)                                                                                     \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                            \
			std::fprintf(stderr, __VA_ARGS__);                                                   \
			std::fputc('\n', stderr);                                                            \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

struct Library {
	void *handle = nullptr;
	void (*add_probe)() = nullptr;
	udp_event_t (*dequeue)() = nullptr;
	unsigned (*status)() = nullptr;
	void (*cleanup)() = nullptr;
	const char *(*last_error)() = nullptr;
};

template <typename T> void resolve(void *handle, const char *name, T &fn)
{
	fn = reinterpret_cast<T>(dlsym(handle, name));
	if (!fn) {
		std::fprintf(stderr, "FAIL: dlsym(%s): %s\n", name, dlerror());
		std::exit(1);
	}
}

Library load(const char *path)
{
	Library lib;
	lib.handle = dlopen(path, RTLD_LAZY);
	if (!lib.handle) {
		std::fprintf(stderr, "FAIL: dlopen(%s): %s\n", path, dlerror());
		std::exit(1);
	}
	resolve(lib.handle, "AddProbe", lib.add_probe);
	resolve(lib.handle, "DequeuePerfEvent", lib.dequeue);
	resolve(lib.handle, "getStatus", lib.status);
	resolve(lib.handle, "cleanup", lib.cleanup);
	resolve(lib.handle, "udpEvent_lastError", lib.last_error);
	return lib;
}

bool zeroed(const udp_event_t &event)
{
	const udp_event_t zero{};
	return std::memcmp(&event, &zero, sizeof(event)) == 0;
}

int thread_count()
{
	int n = 0;
	if (DIR *dir = opendir("/proc/self/task")) {
		while (dirent *entry = readdir(dir))
			if (entry->d_name[0] != '.')
				n++;
		closedir(dir);
	}
	return n;
}

bool mapped(const char *real_path)
{
	FILE *maps = std::fopen("/proc/self/maps", "re");
	char line[PATH_MAX + 128];
	bool hit = false;
	while (maps && std::fgets(line, sizeof(line), maps))
		hit = hit || std::strstr(line, real_path) != nullptr;
	if (maps)
		std::fclose(maps);
	return hit;
}

void attach(const Library &lib)
{
	lib.add_probe();
	CHECK(lib.status() != 0, "getStatus() is 0 after AddProbe() (as root): %s",
	      lib.last_error() ? lib.last_error() : "no error recorded");
	if (!lib.status())
		std::exit(1);
}

// Blocks `count` threads in DequeuePerfEvent() (attached, they may first get
// real events: they keep dequeuing until the zeroed one), calls cleanup() and
// checks that each comes back promptly with a zeroed event.
void blocked_then_cleanup(const Library &lib, int count)
{
	std::atomic<int> returned{0};
	std::vector<Clock::time_point> when(static_cast<size_t>(count));
	std::vector<long> events(static_cast<size_t>(count), 0);
	std::vector<std::thread> threads;
	for (int i = 0; i < count; i++)
		threads.emplace_back([&, i] {
			while (!zeroed(lib.dequeue()))
				events[static_cast<size_t>(i)]++;
			when[static_cast<size_t>(i)] = Clock::now();
			returned++;
		});
	std::this_thread::sleep_for(std::chrono::milliseconds(300));
	CHECK(returned.load() == 0, "%d DequeuePerfEvent() returned a zeroed event before cleanup()",
	      returned.load());

	const auto t0 = Clock::now();
	lib.cleanup();
	const auto cleanup_took = Clock::now() - t0;
	const auto deadline = t0 + std::chrono::seconds(5);
	while (returned.load() < count && Clock::now() < deadline)
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	if (returned.load() < count) {
		std::fprintf(
			stderr,
			"FAIL: %d of %d blocked DequeuePerfEvent() did not return within 5 s of cleanup()\n",
			count - returned.load(), count);
		std::_Exit(1);
	}
	for (auto &t : threads)
		t.join();
	for (int i = 0; i < count; i++) {
		const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
			when[static_cast<size_t>(i)] - t0);
		CHECK(ms.count() < 1000, "thread %d returned %lld ms after cleanup()", i,
		      static_cast<long long>(ms.count()));
	}
	std::printf("%d blocked consumers returned a zeroed event after cleanup() (which took %lld ms)\n",
		    count,
		    static_cast<long long>(
			    std::chrono::duration_cast<std::chrono::milliseconds>(cleanup_took).count()));
	CHECK(lib.status() == 0, "getStatus() is not 0 after cleanup()");
}

int blocked(const char *path, bool attached)
{
	char real_path[PATH_MAX];
	if (!realpath(path, real_path)) {
		std::fprintf(stderr, "FAIL: %s does not exist\n", path);
		return 1;
	}
	const int threads_before = thread_count();
	Library lib = load(path);
	if (attached)
		attach(lib);
	blocked_then_cleanup(lib, 4);

	// Twice is harmless, and later calls return at once.
	const auto t0 = Clock::now();
	lib.cleanup();
	CHECK(zeroed(lib.dequeue()), "DequeuePerfEvent() after cleanup() is not zeroed");
	CHECK(Clock::now() - t0 < std::chrono::milliseconds(500),
	      "cleanup() twice or a later DequeuePerfEvent() waited");

	if (attached) {
		// A second life after cleanup().
		attach(lib);
		blocked_then_cleanup(lib, 2);
	}

	CHECK(dlclose(lib.handle) == 0, "dlclose: %s", dlerror());
	CHECK(!mapped(real_path), "%s is still mapped after dlclose()", real_path);
	CHECK(thread_count() == threads_before, "%d threads after dlclose(), %d before", thread_count(),
	      threads_before);

	if (attached) {
		// dlclose() without cleanup() stops the tracer too.
		lib = load(path);
		attach(lib);
		CHECK(thread_count() > threads_before, "no tracer thread while attached");
		CHECK(dlclose(lib.handle) == 0, "dlclose: %s", dlerror());
		CHECK(!mapped(real_path), "%s is still mapped after dlclose() without cleanup()", real_path);
		CHECK(thread_count() == threads_before,
		      "%d threads after dlclose() without cleanup(), %d before", thread_count(),
		      threads_before);
	}
	if (!failures)
		std::printf("ok: blocked consumers woken by cleanup(), library unloaded, no thread left%s\n",
			    attached ? " (attached)" : "");
	return failures ? 1 : 0;
}

// ---- the legacy example's signal handler ----

Library g_lib;

void legacy_handler(int signum)
{
	g_lib.cleanup();
	if (g_lib.handle && dlclose(g_lib.handle))
		std::puts("Error closing handle, but continuing shutdown");
	std::exit(signum);
}

int signal_exit(const char *path, bool attached)
{
	int ready[2];
	if (pipe(ready) != 0)
		return 1;
	const pid_t child = fork();
	if (child == 0) {
		close(ready[0]);
		g_lib = load(path);
		if (attached)
			attach(g_lib);
		std::signal(SIGINT, legacy_handler);
		if (write(ready[1], "r", 1) != 1)
			std::_Exit(3);
		for (;;)
			g_lib.dequeue(); // the example's main loop
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1) {
		std::fprintf(stderr, "FAIL: the child did not get ready\n");
		return 1;
	}
	// Let it block in DequeuePerfEvent().
	std::this_thread::sleep_for(std::chrono::milliseconds(300));
	kill(child, SIGINT);
	const auto deadline = Clock::now() + std::chrono::seconds(10);
	int st = 0;
	while (waitpid(child, &st, WNOHANG) == 0) {
		if (Clock::now() > deadline) {
			kill(child, SIGKILL);
			waitpid(child, &st, 0);
			std::fprintf(stderr,
				     "FAIL: no exit within 10 s of SIGINT: cleanup()/dlclose() in the "
				     "handler deadlocked\n");
			return 1;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == SIGINT,
	      "the child %s %d, expected exit(2) from the handler",
	      WIFEXITED(st) ? "exited with" : "died of signal",
	      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	if (!failures)
		std::printf("ok: SIGINT handler calling cleanup(), dlclose(), exit() while blocked%s\n",
			    attached ? " (attached)" : "");
	return failures ? 1 : 0;
}

// ---- exit() without cleanup() ----

int exit_without_cleanup(const char *path, bool attached)
{
	const pid_t child = fork();
	if (child == 0) {
		Library lib = load(path);
		if (attached)
			attach(lib);
		std::thread([&lib] { lib.dequeue(); }).detach();
		std::this_thread::sleep_for(std::chrono::milliseconds(200));
		std::exit(0);
	}
	const auto deadline = Clock::now() + std::chrono::seconds(10);
	int st = 0;
	while (waitpid(child, &st, WNOHANG) == 0) {
		if (Clock::now() > deadline) {
			kill(child, SIGKILL);
			waitpid(child, &st, 0);
			std::fprintf(stderr,
				     "FAIL: exit() did not finish within 10 s: the library's unload hung\n");
			return 1;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child %s %d, expected exit(0)",
	      WIFEXITED(st) ? "exited with" : "died of signal",
	      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	if (!failures)
		std::printf("ok: exit() with a blocked consumer and no cleanup()%s\n",
			    attached ? " (attached)" : "");
	return failures ? 1 : 0;
}

// ---- a full queue ----

constexpr std::uint16_t kShedServer = 42000, kShedClient = 42001;
constexpr int kShedBursts = 3, kShedBurst = 100;

bool shed_traffic()
{
	sockaddr_in server{}, client{};
	server.sin_family = client.sin_family = AF_INET;
	server.sin_addr.s_addr = client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server.sin_port = htons(kShedServer);
	client.sin_port = htons(kShedClient);
	const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const int c = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (bind(s, reinterpret_cast<sockaddr *>(&server), sizeof(server)) != 0 ||
	    bind(c, reinterpret_cast<sockaddr *>(&client), sizeof(client)) != 0 ||
	    connect(c, reinterpret_cast<sockaddr *>(&server), sizeof(server)) != 0)
		return false;
	char buf[64] = {};
	// Bursts more than a second apart: the report may come once per second.
	for (int b = 0; b < kShedBursts; b++) {
		for (int i = 0; i < kShedBurst; i++)
			if (send(c, buf, sizeof(buf), 0) != sizeof(buf) ||
			    recv(s, buf, sizeof(buf), 0) != sizeof(buf))
				return false;
		std::this_thread::sleep_for(std::chrono::milliseconds(1100));
	}
	close(c);
	close(s);
	return true;
}

// Runs `body` in a child with its stderr captured (in a network namespace
// of its own if `fresh_netns`; exit 3 if none can be made): the child's exit
// status (minus its signal if one ended it) and its stderr, also copied to
// this process's.
struct ChildRun {
	int status = -1;
	std::string err;
	bool ok() const { return status == 0; }
};

template <typename Body> ChildRun run_child(bool fresh_netns, Body body)
{
	ChildRun run;
	int err_pipe[2];
	if (pipe(err_pipe) != 0)
		return run;
	const pid_t child = fork();
	if (child == 0) {
		dup2(err_pipe[1], STDERR_FILENO);
		close(err_pipe[0]);
		if (fresh_netns) {
			try {
				testutil::enter_fresh_netns();
			} catch (const std::exception &e) {
				std::fprintf(stderr, "%s\n", e.what());
				std::_Exit(3);
			}
		}
		const int rc = body();
		std::fflush(stderr);
		std::_Exit(rc);
	}
	close(err_pipe[1]);
	char buf[4096];
	ssize_t n;
	while ((n = read(err_pipe[0], buf, sizeof(buf))) > 0)
		run.err.append(buf, static_cast<size_t>(n));
	close(err_pipe[0]);
	int st = 0;
	waitpid(child, &st, 0);
	run.status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
	std::fprintf(stderr, "child stderr:\n%s", run.err.c_str());
	return run;
}

int shed(const char *path)
{
	testutil::require_root_or_skip("compat shed");
	const ChildRun run = run_child(true, [path] {
		setenv("UDPEVENT_INTERVAL_MS", "0", 1);
		setenv("UDPEVENT_QUEUE_SIZE", "4", 1);
		// Only this test's flows: a busy host must not decide what is shed.
		setenv("UDPEVENT_PORT", std::to_string(kShedServer).c_str(), 1);
		const auto t0 = Clock::now();
		Library lib = load(path);
		attach(lib);
		if (!shed_traffic())
			return 4;
		auto shed_count =
			reinterpret_cast<unsigned long long (*)()>(dlsym(lib.handle, "udpEvent_shedCount"));
		// Nothing was dequeued: the queue holds the newest four snapshots,
		// and the client flow's last one carries its totals.
		const auto pid = static_cast<std::uint32_t>(getpid());
		std::uint32_t last_tx = 0;
		bool older = false;
		for (int i = 0; i < 4; i++) {
			const udp_event_t e = lib.dequeue();
			if (e.pid != pid || e.SPT != kShedClient)
				continue;
			last_tx = e.txPkts;
			older = older || e.txPkts + 4 < kShedBursts * kShedBurst;
		}
		lib.cleanup();
		const auto ms =
			std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
		std::fprintf(stderr, "shed=%llu last_tx=%u elapsed_ms=%lld\n", shed_count(), last_tx,
			     static_cast<long long>(ms));
		return shed_count() > 0 && last_tx == kShedBursts * kShedBurst && !older ? 0 : 5;
	});
	const std::string &err = run.err;
	CHECK(run.ok(),
	      "child status %d (3: unshare, 4: traffic, 5: nothing shed, or the queue kept old events)",
	      run.status);
	size_t reports = 0;
	for (size_t at = 0; (at = err.find("libudpEvent: shed ", at)) != std::string::npos; at++)
		reports++;
	// At least one report, and at most one a second.
	const auto at = err.find("elapsed_ms=");
	const long long elapsed_ms = at == std::string::npos ? 0 : std::atoll(err.c_str() + at + 11);
	CHECK(reports >= 1 && static_cast<long long>(reports) <= elapsed_ms / 1000 + 1,
	      "%zu shedding reports on stderr in %lld ms", reports, elapsed_ms);
	if (!failures)
		std::printf("ok: the full queue shed the oldest events and said so %zu times\n", reports);
	return failures ? 1 : 0;
}

// ---- a full flow table, said ----

// One socket sending to more ports than the table holds flows: those it
// cannot admit are counted in no flow, and the library says so on stderr.
int untracked(const char *path)
{
	testutil::require_root_or_skip("compat untracked");
	constexpr int kPorts = 200;
	const ChildRun run = run_child(true, [path] {
		setenv("UDPEVENT_MAX_FLOWS", "16", 1);
		// Only this process's flows: the host's own cannot fill the table.
		setenv("UDPEVENT_PID", std::to_string(getpid()).c_str(), 1);
		Library lib = load(path);
		attach(lib);
		const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		sockaddr_in to{};
		to.sin_family = AF_INET;
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		char buf[16] = {};
		for (int i = 0; i < kPorts; i++) {
			to.sin_port = htons(static_cast<std::uint16_t>(40000 + i));
			if (sendto(s, buf, sizeof(buf), 0, reinterpret_cast<sockaddr *>(&to), sizeof(to)) !=
			    sizeof(buf))
				return 4;
		}
		// The library reports at most once a second.
		std::this_thread::sleep_for(std::chrono::milliseconds(2500));
		close(s);
		lib.cleanup();
		return 0;
	});
	const std::string &err = run.err;
	CHECK(run.ok(), "child status %d (3: unshare, 4: traffic)", run.status);
	const auto at = err.find("counted in no flow: the flow table was full; raise UDPEVENT_MAX_FLOWS");
	CHECK(at != std::string::npos, "no report of the traffic the full table turned away");
	// The datagrams of the operations it could not admit: one each, 16 bytes.
	std::uint64_t ops = 0, datagrams = 0, bytes = 0;
	for (size_t from = 0; (from = err.find("libudpEvent: ", from)) != std::string::npos; from++) {
		const auto line = err.substr(from, err.find('\n', from) - from);
		const auto o = line.find(" operations (");
		if (o == std::string::npos)
			continue;
		const auto start = line.rfind(' ', o - 1) + 1;
		unsigned long long a = 0, d = 0, b = 0;
		if (std::sscanf(line.c_str() + start, "%llu operations (%llu datagrams, %llu bytes)", &a, &d,
				&b) == 3) {
			ops += a;
			datagrams += d;
			bytes += b;
		}
	}
	CHECK(ops > 0 && datagrams == ops && bytes == 16 * ops && ops <= kPorts,
	      "reported %llu operations, %llu datagrams, %llu bytes", static_cast<unsigned long long>(ops),
	      static_cast<unsigned long long>(datagrams), static_cast<unsigned long long>(bytes));
	if (!failures)
		std::printf("ok: %llu operations the full table turned away were said on stderr\n",
			    static_cast<unsigned long long>(ops));
	return failures ? 1 : 0;
}

// ---- a failed attach ----

int attach_error(const char *path)
{
	const auto t0 = Clock::now();
	const ChildRun run = run_child(false, [path] {
		Library lib = load(path);
		// As root, become nobody: the tracer cannot attach without privileges.
		if (geteuid() == 0 && (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
				       setresuid(65534, 65534, 65534) != 0))
			return 3;
		lib.add_probe();
		int rc = 0;
		if (lib.status() != 0)
			rc = 4;
		const char *error = lib.last_error();
		if (!error || !*error)
			rc = 5;
		else
			std::fprintf(stderr, "lastError=%s\n", error);
		lib.cleanup();
		if (!zeroed(lib.dequeue()))
			rc = 6;
		return rc;
	});
	const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
	const std::string &err = run.err;
	CHECK(run.ok(),
	      "child status %d (3: cannot drop privileges, 4: getStatus() not 0, 5: no udpEvent_lastError(), "
	      "6: "
	      "not zeroed after cleanup())",
	      run.status);
	CHECK(err.find("libudpEvent: AddProbe failed: ") != std::string::npos,
	      "AddProbe() did not say on stderr why it failed");
	const auto at = err.find("lastError=");
	if (at != std::string::npos) {
		const std::string error = err.substr(at + 10, err.find('\n', at) - at - 10);
		CHECK(err.find("libudpEvent: " + error + "\n") != std::string::npos,
		      "stderr does not carry udpEvent_lastError() '%s'", error.c_str());
	}
	CHECK(took < std::chrono::seconds(30), "AddProbe() took %lld ms to fail",
	      static_cast<long long>(took.count()));
	if (!failures)
		std::printf("ok: a failed attach is reported on stderr with its cause (%lld ms)\n",
			    static_cast<long long>(took.count()));
	return failures ? 1 : 0;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 3) {
		std::fprintf(stderr,
			     "usage: %s LIBUDPEVENT_SO blocked|signal|exit|error|shed|untracked [attached]\n",
			     argv[0]);
		return 2;
	}
	const std::string mode = argv[2];
	const bool attached = argc > 3 && std::string(argv[3]) == "attached";
	if (attached)
		testutil::require_root_or_skip("compat shutdown (attached)");
	// The backend under test (UDPI_TEST_BACKEND, as in every root tier).
	setenv("UDPEVENT_BACKEND", testutil::test_backend().c_str(), 1);
	if (mode == "blocked")
		return blocked(argv[1], attached);
	if (mode == "signal")
		return signal_exit(argv[1], attached);
	if (mode == "exit")
		return exit_without_cleanup(argv[1], attached);
	if (mode == "error")
		return attach_error(argv[1]);
	if (mode == "shed")
		return shed(argv[1]);
	if (mode == "untracked")
		return untracked(argv[1]);
	std::fprintf(stderr, "unknown mode %s\n", argv[2]);
	return 2;
}
