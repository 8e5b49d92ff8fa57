// SPDX-License-Identifier: LGPL-2.1-or-later
#include "privileges.h"

#include <cerrno>
#include <fmt/format.h>
#include <linux/capability.h>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include <udpintercept/error.h>

namespace udpintercept::detail {

namespace {

bool has_cap(const __user_cap_data_struct (&data)[2], int cap)
{
	return data[cap / 32].effective & (1u << (cap % 32));
}

} // namespace

void check_privileges(bool need_net_admin)
{
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	__user_cap_data_struct data[2]{};
	if (syscall(SYS_capget, &hdr, data) != 0)
		return; // cannot tell: let the load say
	constexpr int kCapSysAdmin = 21, kCapNetAdmin = 12, kCapPerfmon = 38, kCapBpf = 39;
	const bool admin = has_cap(data, kCapSysAdmin);
	std::vector<std::string> missing;
	if (!admin && !has_cap(data, kCapBpf))
		missing.emplace_back("CAP_BPF");
	if (!admin && !has_cap(data, kCapPerfmon))
		missing.emplace_back("CAP_PERFMON");
	if (need_net_admin && !has_cap(data, kCapNetAdmin))
		missing.emplace_back("CAP_NET_ADMIN");
	if (missing.empty())
		return;
	throw Error("privileges", EPERM,
		    fmt::format("udpintercept needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run as root); "
				"this process lacks {}",
				fmt::join(missing, ", ")));
}

} // namespace udpintercept::detail
