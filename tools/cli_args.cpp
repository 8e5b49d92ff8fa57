// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cli_args.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <fmt/format.h>
#include <netinet/in.h>
#include <optional>

#include "parse.h"

namespace udpintercept::cli {

namespace {

constexpr std::string_view kUsage = R"(Usage: udpintercept [OPTION]...
Trace UDP sends and receives on this machine (IPv4 and IPv6) and print one
snapshot per flow: a flow is one local socket talking to one remote endpoint,
and each snapshot carries its cumulative counters.

Output:
  -j, --json              one JSON object per line, fields: event time_ns time
                          pid uid comm cgroup_id cgroup container_id netns
                          family saddr sport daddr dport tx_bytes tx_packets
                          rx_bytes rx_packets rx_drops; more may come, so
                          ignore fields you do not know (default: one
                          readable line per snapshot)
  -i, --interval MS       at most one update per flow every MS milliseconds
                          (default 1000); 0 = a snapshot for every operation
  -d, --duration S        stop after S seconds (default: until SIGINT/SIGTERM)
      --flow-timeout S    a flow with no operation for S seconds is reported
                          as expire (its totals) and forgotten; the same
                          socket and peer talking again start a new flow
                          (default 300; 0 = never). Past 90 % of --max-flows
                          the longest-idle flows are expired early
  -q, --quiet             no per-flow lines (with --metrics: the service mode)

Filters (applied in the kernel):
  -p, --pid PID           only operations by process PID
  -u, --uid UID           only operations by user UID
  -P, --port PORT         only flows with local or remote port PORT
  -f, --family FAMILY     ipv4 or ipv6 (IPv4-mapped IPv6 traffic counts as ipv4)
  -c, --cgroup PATH       only operations by tasks in this cgroup v2 directory
                          or in any below it (a pod's containers, a slice's
                          services)

Metrics (Prometheus text exposition):
      --metrics [ADDR:]PORT
                          serve http://ADDR:PORT/metrics, and /health (200
                          while tracing); ADDR is a literal IPv4 address,
                          default 127.0.0.1 (an IPv6 one in brackets needs a
                          civetweb built with IPv6); PORT 0 takes a free
                          port, said on stderr. Counters per comm, family and
                          container: sent and received bytes and datagrams,
                          and received datagrams the kernel dropped, exact
                          sums over the flows
      --metrics-labels LIST
                          more labels, comma-separated: uid, pid, netns,
                          local_addr, local_port, remote_addr, remote_port
      --metrics-max-series N
                          at most N series (default 10000); flows past it are
                          counted in one series whose labels are all ~other

Kernel hooks and sizes:
  -b, --backend NAME      auto (default), fentry, kprobe or tracepoint; auto
                          probes the kernel and picks the best one it offers
      --max-flows N       flow table size (default 65536)
      --max-sockets N     socket table size (default 65536)
      --ring-buffer BYTES ring buffer size, a power of two (default 4194304)
      --recv-peers MODE   tracepoint backend: exact (default) notes the sender
                          of every arriving datagram from the start, which
                          recv() without an address on an unconnected socket
                          needs; lazy-inexact defers that to the first such
                          receive (cheaper until then, but that receive and
                          the datagrams queued then count under an unknown
                          peer)
  -v, --verbose           log backend probing, libbpf warnings and how cgroup
                          ids are named to stderr
  -h, --help              this text
  -V, --version           the version

Events: connect (connect() set the peer), update (counters changed), close
(the socket was destroyed: final totals), expire (no operation for
--flow-timeout: the flow's totals; a later one of the same socket and peer
counts from zero, so a flow's total is the sum of its expires and its last
snapshot), final (tracing stopped while the flow was open). On SIGINT,
SIGTERM, the end of --duration or when stdout's reader has gone, the final
snapshots are printed, then one summary line on stderr:
  udpintercept: events=N lost=N closes_deferred=N untracked_flows=N ...
lost counts snapshots the ring buffer had no room for; counters stay exact
because every snapshot is cumulative. no_listener counts datagrams that
arrived for a port no socket listened on (they belong to no flow). missed
counts runs of the tracer's programs the kernel skipped (the program was
already running on that CPU): what they would have counted is in no flow.

rx_drops counts the datagrams from a flow's peer that the kernel discarded
on their way into the socket (receive buffer or protocol memory full, the
socket's filter, a bad checksum found when read): the drops column of
/proc/net/udp, by sender. A drop is charged to the socket's last known user
(pid 0 and an empty comm if none was seen), not to the task that happened
to deliver the datagram.

Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run as root, or grant those
three), and gives up those it no longer uses once attached. Exit status: 0
after a clean stop, 1 on a runtime error (stdout closed or full included,
or not read for 2 s once stopped), 2 for bad usage.
)";

// Applies an option's value; returns an error message, or nothing.
using Apply = std::optional<std::string> (*)(Config &, std::string_view value);

struct OptionSpec {
	char short_name; // 0: long only
	std::string_view long_name;
	bool takes_value;
	Apply apply;
};

// A whole number within `limit`, stored by `store`.
template <const detail::Limit &limit, typename Store>
std::optional<std::string> number(Config &c, std::string_view value, Store store)
{
	std::string error;
	const auto n = detail::parse_whole(value, limit, &error);
	if (!n)
		return error;
	store(c, *n);
	return std::nullopt;
}

// --metrics-labels: names added to the default labels, in the order given.
std::optional<std::string> add_metric_labels(Config &c, std::string_view list)
{
	for (;;) {
		const auto comma = list.find(',');
		const std::string_view name = list.substr(0, comma);
		const auto label = parse_metric_label(name);
		if (!label)
			return fmt::format(
				"'{}' is not a label: expected a comma-separated list of uid, pid, netns, "
				"local_addr, local_port, remote_addr, remote_port",
				detail::quote(name));
		auto &labels = c.metrics_config.labels;
		if (std::find(labels.begin(), labels.end(), *label) == labels.end())
			labels.push_back(*label);
		if (comma == std::string_view::npos)
			return std::nullopt;
		list.remove_prefix(comma + 1);
	}
}

const std::array<OptionSpec, 21> kOptions = {{
	{'j', "json", false,
	 [](Config &c, std::string_view) -> std::optional<std::string> {
		 c.json = true;
		 return std::nullopt;
	 }},
	{'q', "quiet", false,
	 [](Config &c, std::string_view) -> std::optional<std::string> {
		 c.quiet = true;
		 return std::nullopt;
	 }},
	{0, "metrics", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 std::string error;
		 c.metrics = parse_metrics_listen(v, &error);
		 return c.metrics ? std::nullopt : std::optional(error);
	 }},
	{0, "metrics-labels", true, add_metric_labels},
	{0, "metrics-max-series", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kMaxSeries>(
			 c, v, [](Config &c, std::uint64_t n) { c.metrics_config.max_series = n; });
	 }},
	{'i', "interval", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kIntervalMs>(
			 c, v, [](Config &c, std::uint64_t n) { c.options.interval = std::chrono::milliseconds(n); });
	 }},
	{'d', "duration", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kDurationS>(
			 c, v, [](Config &c, std::uint64_t n) { c.duration = std::chrono::seconds(n); });
	 }},
	{0, "flow-timeout", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kFlowTimeoutS>(c, v, [](Config &c, std::uint64_t n) {
			 c.options.flow_timeout = std::chrono::seconds(n);
		 });
	 }},
	{'p', "pid", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kPid>(
			 c, v, [](Config &c, std::uint64_t n) { c.options.pid = static_cast<std::uint32_t>(n); });
	 }},
	{'u', "uid", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kUid>(
			 c, v, [](Config &c, std::uint64_t n) { c.options.uid = static_cast<std::uint32_t>(n); });
	 }},
	{'P', "port", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kPort>(
			 c, v, [](Config &c, std::uint64_t n) { c.options.port = static_cast<std::uint16_t>(n); });
	 }},
	{'f', "family", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 std::string error;
		 c.options.family = detail::parse_family(v, &error);
		 return c.options.family ? std::nullopt : std::optional(error);
	 }},
	{'c', "cgroup", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 if (v.empty() || v.front() != '/')
			 return "expected the absolute path of a cgroup v2 directory";
		 c.options.cgroup = std::string(v);
		 return std::nullopt;
	 }},
	{'b', "backend", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 std::string error;
		 const auto b = detail::parse_backend_name(v, &error);
		 if (!b)
			 return error;
		 c.options.backend = *b;
		 return std::nullopt;
	 }},
	{0, "max-flows", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kMaxFlows>(c, v, [](Config &c, std::uint64_t n) {
			 c.options.max_flows = static_cast<std::uint32_t>(n);
		 });
	 }},
	{0, "max-sockets", true,
	 [](Config &c, std::string_view v) {
		 return number<detail::kMaxSockets>(c, v, [](Config &c, std::uint64_t n) {
			 c.options.max_sockets = static_cast<std::uint32_t>(n);
		 });
	 }},
	{0, "ring-buffer", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 auto error = number<detail::kRingBuffer>(c, v, [](Config &c, std::uint64_t n) {
			 c.options.ring_buffer_bytes = static_cast<std::uint32_t>(n);
		 });
		 const auto n = c.options.ring_buffer_bytes;
		 if (!error && (n & (n - 1)))
			 error = "expected a power of two";
		 return error;
	 }},
	{0, "recv-peers", true,
	 [](Config &c, std::string_view v) -> std::optional<std::string> {
		 // `always` is the former name of exact; on-demand was renamed for what it gives up.
		 if (v == "on-demand")
			 return "expected exact or lazy-inexact (on-demand is now lazy-inexact)";
		 if (v != "exact" && v != "always" && v != "lazy-inexact")
			 return "expected exact or lazy-inexact";
		 c.options.recv_peers_lazy_inexact = v == "lazy-inexact";
		 return std::nullopt;
	 }},
	{'v', "verbose", false,
	 [](Config &c, std::string_view) -> std::optional<std::string> {
		 c.verbose = true;
		 return std::nullopt;
	 }},
	// --help and --version end the parse: see parse_args().
	{'h', "help", false, nullptr},
	{'V', "version", false, nullptr},
}};

const OptionSpec *find_long(std::string_view name)
{
	const auto it = std::find_if(kOptions.begin(), kOptions.end(),
				     [&](const OptionSpec &o) { return o.long_name == name; });
	return it == kOptions.end() ? nullptr : &*it;
}

const OptionSpec *find_short(char name)
{
	const auto it = std::find_if(kOptions.begin(), kOptions.end(), [&](const OptionSpec &o) {
		return o.short_name && o.short_name == name;
	});
	return it == kOptions.end() ? nullptr : &*it;
}

ParseResult usage_error(std::string message)
{
	ParseResult r;
	r.action = Action::usage_error;
	r.error = std::move(message);
	return r;
}

} // namespace

std::string_view usage()
{
	return kUsage;
}

std::string MetricsListen::host_port() const
{
	return ipv6 ? fmt::format("[{}]:{}", address, port) : fmt::format("{}:{}", address, port);
}

std::optional<MetricsListen> parse_metrics_listen(std::string_view text, std::string *error)
{
	constexpr detail::Limit kMetricsPort{"port", 0, 65535}; // 0: any free port
	const auto fail = [&](std::string message) -> std::optional<MetricsListen> {
		if (error)
			*error = std::move(message);
		return std::nullopt;
	};
	MetricsListen listen;
	std::string_view port = text;
	if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
		std::string_view address = text.substr(0, colon);
		port = text.substr(colon + 1);
		// Literal addresses only: a name could resolve to several, or to none at start.
		listen.ipv6 = address.size() >= 2 && address.front() == '[' && address.back() == ']';
		if (listen.ipv6)
			address = address.substr(1, address.size() - 2);
		listen.address = std::string(address);
		unsigned char buf[sizeof(in6_addr)];
		if (inet_pton(listen.ipv6 ? AF_INET6 : AF_INET, listen.address.c_str(), buf) != 1)
			return fail("expected [ADDR:]PORT, ADDR a literal IPv4 address or an IPv6 address in "
				    "brackets (127.0.0.1:9100, [::1]:9100)");
	}
	const auto n = detail::parse_whole(port, kMetricsPort, nullptr);
	if (!n)
		return fail("expected [ADDR:]PORT with PORT a whole number from 0 to 65535");
	listen.port = static_cast<std::uint16_t>(*n);
	return listen;
}

ParseResult parse_args(std::span<const std::string_view> args)
{
	ParseResult result;
	Config &config = result.config;
	std::optional<ParseResult> ended; // --help or --version, unless usage is bad

	// One option: its spec, how it was spelled, and its value if attached (--x=v, -xv).
	const auto apply = [&](const OptionSpec &spec, std::string_view spelled,
			       std::optional<std::string_view> value,
			       std::size_t &i) -> std::optional<std::string> {
		if (!spec.takes_value) {
			if (value)
				return fmt::format("option '{}' takes no value", detail::quote(spelled));
			if (!spec.apply) {
				if (!ended) {
					ended.emplace();
					ended->action =
						spec.short_name == 'h' ? Action::help : Action::version;
				}
				return std::nullopt;
			}
			return spec.apply(config, {});
		}
		if (!value) {
			if (i + 1 >= args.size())
				return fmt::format("option '{}' needs a value", detail::quote(spelled));
			value = args[++i];
		}
		if (auto error = spec.apply(config, *value))
			return fmt::format("invalid {} '{}': {}", spelled, detail::quote(*value), *error);
		return std::nullopt;
	};

	bool options_end = false;
	std::string metrics_option; // an option that means nothing without --metrics
	// A filter given twice would keep only its last value, where either
	// might have been meant (or both): refused.
	constexpr std::array<std::string_view, 5> kFilters = {"pid", "uid", "port", "family", "cgroup"};
	std::vector<std::string_view> filters_given;
	const auto once = [&](const OptionSpec &spec,
			      std::string_view spelled) -> std::optional<std::string> {
		if (std::find(kFilters.begin(), kFilters.end(), spec.long_name) == kFilters.end())
			return std::nullopt;
		if (std::find(filters_given.begin(), filters_given.end(), spec.long_name) !=
		    filters_given.end())
			return fmt::format("option '{}' given twice: each filter takes one value", spelled);
		filters_given.push_back(spec.long_name);
		return std::nullopt;
	};
	for (std::size_t i = 0; i < args.size(); i++) {
		const std::string_view arg = args[i];
		if (options_end || arg.size() < 2 || arg[0] != '-')
			return usage_error(fmt::format("unexpected argument '{}'", detail::quote(arg)));
		if (arg == "--") {
			options_end = true;
			continue;
		}
		if (arg[1] == '-') {
			std::string_view name = arg.substr(2);
			std::optional<std::string_view> value;
			if (const auto eq = name.find('='); eq != std::string_view::npos) {
				value = name.substr(eq + 1);
				name = name.substr(0, eq);
			}
			const OptionSpec *spec = find_long(name);
			if (!spec)
				return usage_error(fmt::format("unknown option '--{}'", detail::quote(name)));
			if (auto error = once(*spec, arg.substr(0, name.size() + 2)))
				return usage_error(*error);
			if (auto error = apply(*spec, arg.substr(0, name.size() + 2), value, i))
				return usage_error(*error);
			if (spec->long_name.starts_with("metrics-"))
				metrics_option = fmt::format("--{}", spec->long_name);
			continue;
		}
		// Short options, bundled (-jv) or with the value attached (-i500).
		for (std::size_t k = 1; k < arg.size(); k++) {
			const OptionSpec *spec = find_short(arg[k]);
			const std::string spelled = fmt::format("-{}", arg[k]);
			if (!spec)
				return usage_error(
					fmt::format("unknown option '{}'", detail::quote(spelled)));
			std::optional<std::string_view> value;
			if (spec->takes_value && k + 1 < arg.size())
				value = arg.substr(k + 1);
			if (auto error = once(*spec, spelled))
				return usage_error(*error);
			if (auto error = apply(*spec, spelled, value, i))
				return usage_error(*error);
			if (value)
				break;
		}
	}
	if (ended)
		return *ended;
	if (!metrics_option.empty() && !config.metrics)
		return usage_error(fmt::format("{} needs --metrics", metrics_option));
	if (config.quiet && config.json)
		return usage_error("--quiet and --json contradict each other (--quiet prints no flow)");
	return result;
}

} // namespace udpintercept::cli
