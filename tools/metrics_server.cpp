// SPDX-License-Identifier: LGPL-2.1-or-later
#include "metrics_server.h"

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <mutex>
#include <netinet/in.h>
#include <stdexcept>
#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/exposer.h>

#include <udpintercept/error.h>

#include "fd.h"

namespace udpintercept::cli {

namespace {

// What /health answers, read by civetweb's threads.
enum Health : int { kNoServer, kNotAttached, kAttached };
std::atomic<int> g_health{kNoServer};

// civetweb's last error line, for a failure it reports only through its log.
std::mutex g_log_mutex;
std::string g_log;

int begin_request(mg_connection *conn) noexcept
{
	const mg_request_info *request = mg_get_request_info(conn);
	if (!request || !request->local_uri || std::strcmp(request->local_uri, "/health") != 0)
		return 0; // prometheus-cpp's handlers take it
	const bool up = g_health.load() == kAttached;
	const char *body = up ? "ok\n" : "not tracing\n";
	mg_printf(conn,
		  "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
		  "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
		  up ? "200 OK" : "503 Service Unavailable", std::strlen(body), body);
	return up ? 200 : 503;
}

// civetweb's threads serve HTTP and never need a capability, but they start
// before the tracer is attached, holding the capabilities of the thread that
// made them (capabilities belong to threads): each gives up every one, for
// good, as it starts.
void *drop_capabilities(const mg_context *, int) noexcept
{
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	__user_cap_data_struct none[2]{};
	syscall(SYS_capset, &hdr, none);
	return nullptr;
}

int log_message(const mg_connection *, const char *message) noexcept
{
	try {
		const std::lock_guard lock(g_log_mutex);
		g_log = message ? message : "";
	} catch (...) {
	}
	return 1; // said by us, if at all, not on civetweb's stderr
}

// civetweb says only that it could not start: binding a socket the way it
// does first gives the reason (the port taken, an address not here, a
// privileged port) as an errno.
int bind_error(const MetricsListen &listen)
{
	const int family = listen.ipv6 ? AF_INET6 : AF_INET;
	detail::UniqueFd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return errno;
	const int on = 1;
	setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	sockaddr_storage ss{};
	socklen_t len = 0;
	if (listen.ipv6) {
		setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
		auto *sin6 = reinterpret_cast<sockaddr_in6 *>(&ss);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(listen.port);
		inet_pton(AF_INET6, listen.address.c_str(), &sin6->sin6_addr);
		len = sizeof(*sin6);
	} else {
		auto *sin = reinterpret_cast<sockaddr_in *>(&ss);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(listen.port);
		inet_pton(AF_INET, listen.address.c_str(), &sin->sin_addr);
		len = sizeof(*sin);
	}
	if (bind(fd.get(), reinterpret_cast<sockaddr *>(&ss), len) != 0 || ::listen(fd.get(), 1) != 0)
		return errno;
	return 0;
}

} // namespace

MetricsServer::MetricsServer(const MetricsListen &listen, std::shared_ptr<Exposition> exposition)
    : listen_(listen), exposition_(std::move(exposition))
{
	if (g_health.load() != kNoServer)
		throw std::logic_error("one MetricsServer per process");
	// Debian's civetweb 1.15 is built without IPv6 (mg_check_feature(8) == 0).
	if (listen_.ipv6 && mg_check_feature(8) == 0)
		throw Error(
			"metrics", EAFNOSUPPORT,
			fmt::format(
				"cannot listen on {}: the civetweb library udpintercept runs with was built "
				"without IPv6; listen on an IPv4 address (a reverse proxy can serve IPv6)",
				listen_.host_port()));
	if (const int err = bind_error(listen_))
		throw Error("metrics", err,
			    fmt::format("cannot listen on {}: {}", listen_.host_port(), std::strerror(err)));

	CivetCallbacks callbacks;
	callbacks.begin_request = begin_request;
	callbacks.log_message = log_message;
	callbacks.init_thread = drop_capabilities;
	try {
		// A scrape and a health probe at once, and room for a few clients
		// that connect and say nothing: each holds a thread until its
		// request times out (civetweb's default, 30 s, let two of them
		// shut out every scrape and probe for as long as they kept at it).
		exposer_ = std::make_unique<prometheus::Exposer>(
			std::vector<std::string>{"listening_ports", listen_.host_port(), "num_threads", "8",
						 "request_timeout_ms", "5000"},
			&callbacks);
	} catch (const std::exception &e) {
		const std::lock_guard lock(g_log_mutex);
		throw Error("metrics", EADDRNOTAVAIL,
			    fmt::format("cannot serve on {}: {}", listen_.host_port(),
					g_log.empty() ? e.what() : g_log));
	}
	if (const auto ports = exposer_->GetListeningPorts(); !ports.empty())
		listen_.port = static_cast<std::uint16_t>(ports.front());
	exposer_->RegisterCollectable(exposition_);
	g_health = kNotAttached;
}

MetricsServer::~MetricsServer()
{
	exposer_.reset(); // joins civetweb's threads
	g_health = kNoServer;
}

std::string MetricsServer::url() const
{
	return fmt::format("http://{}/metrics", listen_.host_port());
}

void MetricsServer::set_attached(bool attached) noexcept
{
	g_health = attached ? kAttached : kNotAttached;
}

} // namespace udpintercept::cli
