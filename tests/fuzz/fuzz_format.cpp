// SPDX-License-Identifier: LGPL-2.1-or-later
// The JSON and text forms of any Event: extreme values, every address form,
// and a comm, cgroup path or container id of any bytes. The JSON line is one
// valid JSON object in valid UTF-8 whose strings say what the event held,
// with each byte that is not valid UTF-8 as U+FFFD; the text form is one line.
#include <cstddef>
#include <cstdint>
#include <string>

#include "input.h"
#include "json_check.h"

using namespace udpintercept;
using fuzzcheck::JsonCheck;

namespace {

// The text a JSON string holds: what a consumer reads back.
std::string json_string_field(const std::string &json, const std::string &name)
{
	const std::string start = "\"" + name + "\":\"";
	std::size_t i = json.find(start);
	FUZZ_CHECK(i != std::string::npos);
	std::string out;
	for (i += start.size(); i < json.size() && json[i] != '"'; i++) {
		if (json[i] != '\\') {
			out += json[i];
			continue;
		}
		const char e = json[++i];
		switch (e) {
		case 'n':
			out += '\n';
			break;
		case 't':
			out += '\t';
			break;
		case 'r':
			out += '\r';
			break;
		case 'b':
			out += '\b';
			break;
		case 'f':
			out += '\f';
			break;
		case 'u': {
			const unsigned long cp = std::stoul(json.substr(i + 1, 4), nullptr, 16);
			FUZZ_CHECK(cp < 0x80); // only control characters need \u here
			out += static_cast<char>(cp);
			i += 4;
			break;
		}
		default:
			out += e; // \" \\ \/
		}
	}
	return out;
}

// Each byte that is not part of well-formed UTF-8 as U+FFFD, the rest as it is.
std::string replaced(std::string_view t)
{
	std::string out;
	while (!t.empty()) {
		const std::size_t n = JsonCheck::utf8(t);
		if (n == 0) {
			out += "\xef\xbf\xbd";
			t.remove_prefix(1);
		} else {
			out.append(t.substr(0, n));
			t.remove_prefix(n);
		}
	}
	return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
	fuzzcheck::Input in(data, size);
	const Event e = in.event();
	const std::string json = to_json(e);
	FUZZ_CHECK(JsonCheck(json).valid());
	FUZZ_CHECK(json.find('\n') == std::string::npos);
	FUZZ_CHECK(json_string_field(json, "event") == to_string(e.kind));
	FUZZ_CHECK(json_string_field(json, "comm") == replaced(e.comm));
	FUZZ_CHECK(json_string_field(json, "cgroup") == replaced(e.cgroup));
	FUZZ_CHECK(json_string_field(json, "container_id") == replaced(e.container_id));
	FUZZ_CHECK(json.find("\"tx_bytes\":" + std::to_string(e.tx_bytes) + ",") != std::string::npos);
	FUZZ_CHECK(json.find("\"rx_drops\":" + std::to_string(e.rx_drops) + "}") != std::string::npos);
	FUZZ_CHECK(json.find("\"time_ns\":" + std::to_string(e.time.time_since_epoch().count()) + ",") !=
		   std::string::npos);
	const std::string text = to_text(e);
	FUZZ_CHECK(text.find('\n') == std::string::npos);
	FUZZ_CHECK(text.find('\r') == std::string::npos);
	return 0;
}
