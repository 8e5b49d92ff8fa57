// SPDX-License-Identifier: LGPL-2.1-or-later
// The capabilities udpintercept needs, checked before anything is loaded so
// that a missing one is named instead of surfacing as a kernel EPERM.
#pragma once

namespace udpintercept::detail {

/**
 * Throws Error (stage "privileges") naming every capability of CAP_BPF,
 * CAP_PERFMON and (with `need_net_admin`, for cgroup programs)
 * CAP_NET_ADMIN that the process lacks. CAP_SYS_ADMIN stands in for the
 * first two, as the kernel lets it.
 */
void check_privileges(bool need_net_admin);

} // namespace udpintercept::detail
