// SPDX-License-Identifier: LGPL-2.1-or-later
// What libbpf printed while a tracer loaded, kept for the error that follows
// a refusal: its last lines, or nothing where libbpf said nothing.
#include <catch2/catch.hpp>

#include <bpf/libbpf.h>
#include <string>

#include "libbpf_log.h"

using udpintercept::detail::LibbpfCapture;

namespace {

// libbpf's warnings about an object that is not ELF (no privileges needed).
void open_garbage()
{
	static const char garbage[] = "not an ELF object";
	bpf_object *obj = bpf_object__open_mem(garbage, sizeof(garbage), nullptr);
	bpf_object__close(obj); // libbpf 1.x answers null, which close takes
}

} // namespace

TEST_CASE("a refusal libbpf printed nothing about has an empty tail", "[libbpf_log]")
{
	const std::function<void(std::string_view)> log;
	LibbpfCapture capture(log);
	CHECK(capture.tail().empty());
	CHECK(capture.tail(0).empty());
}

TEST_CASE("the tail is libbpf's last lines, whole", "[libbpf_log]")
{
	std::string logged;
	const std::function<void(std::string_view)> log = [&](std::string_view line) {
		logged.append(line).append("\n");
	};
	LibbpfCapture capture(log);
	open_garbage();
	open_garbage();
	const std::string all = capture.tail(1000);
	INFO(all);
	REQUIRE(!all.empty());
	CHECK(all == logged);
	CHECK(all.rfind("libbpf: ", 0) == 0);
	const std::string last = capture.tail(1);
	CHECK(!last.empty());
	CHECK(last.find('\n') == last.size() - 1); // one line, with its end
	CHECK(all.size() > last.size());
	CHECK(all.compare(all.size() - last.size(), last.size(), last) == 0);
}
