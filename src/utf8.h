// SPDX-License-Identifier: LGPL-2.1-or-later
// Text a task or a user chose (a command name, a cgroup path, an argument)
// is any bytes: these turn it into valid text for JSON and for messages.
#pragma once

#include <string>
#include <string_view>

namespace udpintercept::detail {

/**
 * The length of the well-formed UTF-8 sequence at the start of `text`
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF),
 * or 0 if it does not start with one. `text` must not be empty.
 */
std::size_t utf8_sequence(std::string_view text) noexcept;

/// `text` as the contents of a JSON string (no quotes): escapes as RFC 8259
/// requires, and each byte that is not part of valid UTF-8 becomes U+FFFD.
void append_json_text(std::string &out, std::string_view text);

/// `text` for a one-line message: control characters and bytes that are not
/// valid UTF-8 as \xNN, the rest as it is.
std::string escape_utf8(std::string_view text);

} // namespace udpintercept::detail
