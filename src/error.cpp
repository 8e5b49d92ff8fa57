// SPDX-License-Identifier: LGPL-2.1-or-later
#include <udpintercept/error.h>

#include <cstring>

namespace udpintercept {

namespace {

class Category final : public std::error_category {
public:
	const char *name() const noexcept override { return "udpintercept"; }
	std::string message(int ev) const override { return std::strerror(ev); }
	std::error_condition default_error_condition(int ev) const noexcept override
	{
		return std::generic_category().default_error_condition(ev);
	}
};

} // namespace

const std::error_category &category() noexcept
{
	static const Category instance;
	return instance;
}

Error::Error(std::string stage, int errno_value, const std::string &message)
    : std::system_error(errno_value, category(), message), stage_(std::move(stage)), message_(message)
{
}

} // namespace udpintercept
