// SPDX-License-Identifier: LGPL-2.1-or-later
// Reads typed values off a fuzzer's input, front to back; past the end
// everything is zero, so every input means something.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <udpintercept/event.h>

namespace fuzzcheck {

class Input {
public:
	Input(const std::uint8_t *data, std::size_t size) : data_(data), size_(size) {}

	template <typename T> T take()
	{
		T v{};
		const std::size_t n = std::min(sizeof(T), size_ - pos_);
		std::memcpy(&v, data_ + pos_, n);
		pos_ += n;
		return v;
	}

	/// A string of up to `max` bytes, any bytes (its length is the next byte).
	std::string text(std::size_t max)
	{
		const std::size_t want = std::min<std::size_t>(take<std::uint8_t>(), max);
		const std::size_t n = std::min(want, size_ - pos_);
		std::string s(reinterpret_cast<const char *>(data_ + pos_), n);
		pos_ += n;
		return s;
	}

	/// Whatever is left.
	std::string rest()
	{
		std::string s(reinterpret_cast<const char *>(data_ + pos_), size_ - pos_);
		pos_ = size_;
		return s;
	}

	/// An Event with every field from the input: any bytes in its texts,
	/// any values, every address form (IPv4, IPv6, IPv4-mapped, unspecified).
	udpintercept::Event event()
	{
		using namespace udpintercept;
		Event e;
		e.kind = static_cast<EventKind>(take<std::uint8_t>() % 5);
		e.time = WallTime(std::chrono::nanoseconds(take<std::int64_t>()));
		e.pid = take<std::uint32_t>();
		e.uid = take<std::uint32_t>();
		e.cgroup_id = take<std::uint64_t>();
		e.netns = take<std::uint32_t>();
		e.family = take<std::uint8_t>() & 1 ? Family::ipv6 : Family::ipv4;
		for (Endpoint *ep : {&e.local, &e.remote}) {
			ep->address.family = take<std::uint8_t>() & 1 ? Family::ipv6 : Family::ipv4;
			ep->address.bytes = take<std::array<std::uint8_t, 16>>();
			ep->port = take<std::uint16_t>();
		}
		e.tx_bytes = take<std::uint64_t>();
		e.tx_packets = take<std::uint64_t>();
		e.rx_bytes = take<std::uint64_t>();
		e.rx_packets = take<std::uint64_t>();
		e.socket_id = take<std::uint64_t>();
		e.comm = text(64);
		e.container_id = text(96);
		e.rx_drops = take<std::uint64_t>(); // after the texts, so that the seeds keep their meaning
		e.cgroup = rest();
		return e;
	}

private:
	const std::uint8_t *data_;
	std::size_t size_;
	std::size_t pos_ = 0;
};

} // namespace fuzzcheck
