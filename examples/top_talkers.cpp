// Sums ten seconds of UDP traffic by command, family and container, then prints the busiest.
#include <udpintercept/metrics.h>
#include <udpintercept/tracer.h>

#include <algorithm>
#include <chrono>
#include <iostream>

int main()
{
	using namespace std::chrono_literals;
	udpintercept::FlowMetrics flows; // labels comm, family, container; at most 10,000 series
	try {
		udpintercept::Tracer tracer({}, [&](const udpintercept::Event &e) { flows.add(e); });
		const auto end = std::chrono::steady_clock::now() + 10s;
		while (std::chrono::steady_clock::now() < end)
			tracer.poll(100ms);
		tracer.stop(); // the final snapshots complete the sums
	} catch (const udpintercept::Error &e) {
		std::cerr << "udpintercept: " << e.what() << '\n';
		return 1;
	}

	// snapshot() may be called from any thread, an exposition's collector for one.
	auto series = flows.snapshot().series;
	const auto bytes = [](const udpintercept::MetricSeries &s) {
		return s.counters.sent_bytes + s.counters.received_bytes;
	};
	std::sort(series.begin(), series.end(),
		  [&](const auto &a, const auto &b) { return bytes(a) > bytes(b); });
	series.resize(std::min<std::size_t>(series.size(), 10));
	for (const auto &s : series) // values in the order of the labels
		std::cout << bytes(s) << " bytes: " << s.values[0] << ' ' << s.values[1] << ' ' << s.values[2]
			  << '\n';
}
