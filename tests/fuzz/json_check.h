// SPDX-License-Identifier: LGPL-2.1-or-later
// An independent check that a line is one valid JSON value in valid UTF-8
// (RFC 8259, RFC 3629), for the fuzz targets of the formatters: written
// apart from the escaper it checks, so a bug in one is not mirrored in both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

namespace fuzzcheck {

class JsonCheck {
public:
	explicit JsonCheck(std::string_view text) : s_(text) {}

	/// Whether the whole text is exactly one JSON value.
	bool valid()
	{
		if (!value(0))
			return false;
		ws();
		return i_ == s_.size();
	}

private:
	bool value(int depth)
	{
		ws();
		if (i_ >= s_.size() || depth > 64)
			return false;
		switch (s_[i_]) {
		case '{':
			return object(depth);
		case '[':
			return array(depth);
		case '"':
			return string();
		case 't':
			return word("true");
		case 'f':
			return word("false");
		case 'n':
			return word("null");
		default:
			return number();
		}
	}
	bool object(int depth)
	{
		i_++;
		ws();
		if (peek('}'))
			return ++i_, true;
		for (;;) {
			ws();
			if (!string())
				return false;
			ws();
			if (!peek(':'))
				return false;
			i_++;
			if (!value(depth + 1))
				return false;
			ws();
			if (peek('}'))
				return ++i_, true;
			if (!peek(','))
				return false;
			i_++;
		}
	}
	bool array(int depth)
	{
		i_++;
		ws();
		if (peek(']'))
			return ++i_, true;
		for (;;) {
			if (!value(depth + 1))
				return false;
			ws();
			if (peek(']'))
				return ++i_, true;
			if (!peek(','))
				return false;
			i_++;
		}
	}
	bool string()
	{
		if (!peek('"'))
			return false;
		i_++;
		while (i_ < s_.size()) {
			const auto c = static_cast<unsigned char>(s_[i_]);
			if (c == '"')
				return ++i_, true;
			if (c < 0x20)
				return false; // control characters must be escaped
			if (c == '\\') {
				if (++i_ >= s_.size())
					return false;
				const char e = s_[i_++];
				if (e == 'u') {
					for (int k = 0; k < 4; k++, i_++)
						if (i_ >= s_.size() || !hex(s_[i_]))
							return false;
				} else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
					return false;
				}
				continue;
			}
			const std::size_t n = utf8(s_.substr(i_));
			if (n == 0)
				return false;
			i_ += n;
		}
		return false;
	}
	bool number()
	{
		const std::size_t start = i_;
		if (peek('-'))
			i_++;
		if (peek('0')) {
			i_++;
		} else {
			if (!digits())
				return false;
		}
		if (peek('.')) {
			i_++;
			if (!digits())
				return false;
		}
		if (peek('e') || peek('E')) {
			i_++;
			if (peek('+') || peek('-'))
				i_++;
			if (!digits())
				return false;
		}
		return i_ > start;
	}
	bool digits()
	{
		const std::size_t start = i_;
		while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9')
			i_++;
		return i_ > start;
	}
	bool word(std::string_view w)
	{
		if (s_.substr(i_, w.size()) != w)
			return false;
		i_ += w.size();
		return true;
	}
	void ws()
	{
		while (i_ < s_.size() &&
		       (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
			i_++;
	}
	bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
	static bool hex(char c)
	{
		return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
	}

	std::string_view s_;
	std::size_t i_ = 0;

public:
	/// Length of the well-formed UTF-8 sequence `t` starts with, 0 if none.
	static std::size_t utf8(std::string_view t)
	{
		const auto b = [&](std::size_t k) { return static_cast<unsigned char>(t[k]); };
		const auto cont = [&](std::size_t k) { return k < t.size() && (b(k) & 0xc0) == 0x80; };
		if (t.empty())
			return 0;
		const unsigned char c = b(0);
		if (c < 0x80)
			return 1;
		if (c >= 0xc2 && c <= 0xdf)
			return cont(1) ? 2 : 0;
		if (c >= 0xe0 && c <= 0xef) {
			if (!cont(1) || !cont(2))
				return 0;
			if (c == 0xe0 && b(1) < 0xa0)
				return 0; // overlong
			if (c == 0xed && b(1) > 0x9f)
				return 0; // surrogate
			return 3;
		}
		if (c >= 0xf0 && c <= 0xf4) {
			if (!cont(1) || !cont(2) || !cont(3))
				return 0;
			if (c == 0xf0 && b(1) < 0x90)
				return 0;
			if (c == 0xf4 && b(1) > 0x8f)
				return 0; // above U+10FFFF
			return 4;
		}
		return 0;
	}

	/// Whether all of `t` is well-formed UTF-8.
	static bool utf8_text(std::string_view t)
	{
		while (!t.empty()) {
			const std::size_t n = utf8(t);
			if (n == 0)
				return false;
			t.remove_prefix(n);
		}
		return true;
	}
};

/// Stops the run (a libFuzzer crash with this message) when `ok` is false.
#define FUZZ_CHECK(ok)                                                                                       \
	do {                                                                                                 \
		if (!(ok)) {                                                                                 \
			std::fprintf(stderr, "check failed: %s (%s:%d)\n", #ok, __FILE__, __LINE__);         \
			__builtin_trap();                                                                    \
		}                                                                                            \
	} while (0)

} // namespace fuzzcheck
