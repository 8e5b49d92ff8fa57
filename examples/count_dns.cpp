// Prints every UDP flow to or from port 53 for ten seconds, then the totals.
#include <udpintercept/tracer.h>

#include <chrono>
#include <iostream>

int main()
{
	using namespace std::chrono_literals;
	udpintercept::Options options;
	options.port = 53;        // filtered in the kernel
	options.interval = 500ms; // at most two updates per flow per second

	try {
		udpintercept::Tracer tracer(options, [](const udpintercept::Event &e) {
			std::cout << udpintercept::to_string(e.kind) << ' ' << e.comm << '[' << e.pid << "] "
				  << e.local.address.to_string() << ':' << e.local.port << " -> "
				  << e.remote.address.to_string() << ':' << e.remote.port << " sent "
				  << e.tx_packets << '/' << e.tx_bytes << " received " << e.rx_packets << '/'
				  << e.rx_bytes << '\n';
		});
		std::cerr << "tracing with the " << udpintercept::to_string(tracer.backend()) << " backend\n";

		const auto end = std::chrono::steady_clock::now() + 10s;
		while (std::chrono::steady_clock::now() < end)
			tracer.poll(100ms);
		tracer.stop(); // one `final` snapshot per open flow

		const auto stats = tracer.stats();
		std::cerr << stats.events << " snapshots, " << stats.lost << " lost\n";
	} catch (const udpintercept::Error &e) {
		std::cerr << "udpintercept: " << e.what() << '\n'; // says what to do, e.g. run as root
		return 1;
	}
}
