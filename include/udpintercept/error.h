// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include <string>
#include <system_error>

#include <udpintercept/export.h>

namespace udpintercept {

/// The error category of udpintercept: error values are errno numbers.
UDPINTERCEPT_EXPORT const std::error_category &category() noexcept;

/**
 * The one error type the library throws.
 *
 * code() is the errno of the failure in udpintercept's category, stage()
 * names the step that failed ("privileges", "btf", "options", "open",
 * "load", "attach", "ring buffer", …) and what() says what to do about it.
 */
class UDPINTERCEPT_EXPORT Error : public std::system_error {
public:
	Error(std::string stage, int errno_value, const std::string &message);

	/// The step that failed.
	const std::string &stage() const noexcept { return stage_; }

	/// What failed and what to do about it (code().message() is not appended).
	const char *what() const noexcept override { return message_.c_str(); }

private:
	std::string stage_;
	std::string message_;
};

} // namespace udpintercept
