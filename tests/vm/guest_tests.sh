#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs inside each kernel of the matrix (busybox sh): the root test tiers
# under every backend this kernel must offer, the choice `auto` makes, and
# the error for a backend it lacks, and the tracer as nobody with only
# CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and bpf() calls refused in turn.
# Prints @@RESULT lines for run-matrix.
#   guest_tests.sh INTEGRATION_TESTS ACCURACY_TESTS CLI PRIVILEGES_TESTS SETPRIV \
#                  FAULTS_TESTS FAIL_BPF LEGACY_LIBRARY
itest=$1
atest=$2
cli=$3
ptest=$4
setpriv=$5
ftest=$6
fail_bpf=$7
legacy=$8

# What each Debian kernel offers (environment.md): 5.10 and 6.1 lack the
# sock_send_length tracepoint; all three have BTF trampolines and kprobes.
# On these, `auto` is checked by the backend it chooses (auto-chooses-*),
# whose tiers run in full: its CLI tier again would add a minute a kernel.
# 6.12 frees a datagram a receive finds damaged with no drop reason, so the
# tracepoint backend cannot see those drops there (README's limits).
checksum_unseen=""
case "$UDPI_VM_KERNEL" in
5.10 | 6.1)
	backends="fentry kprobe"
	compare="fentry kprobe"
	lacking="tracepoint"
	auto_expected="fentry"
	;;
6.12)
	backends="fentry kprobe tracepoint"
	compare="fentry kprobe tracepoint"
	lacking=""
	auto_expected="fentry"
	checksum_unseen="tracepoint"
	;;
*)
	backends="auto"
	compare=""
	lacking=""
	auto_expected=""
	;;
esac

# The faults tier's [syscalls] sweeps (each bpf() call of the CLI and of the
# legacy library refused, tests/faults/test_syscalls.cpp) run on the host's
# backend, every call, in CI; here on one backend a kernel, one call in 16
# (a run takes seconds under emulation, about a minute a sweep), each
# kernel from another call: "BACKEND FIRST-CALL".
case "$UDPI_VM_KERNEL" in
5.10) sweep="kprobe 1" ;;
6.1) sweep="fentry 6" ;;
6.12) sweep="kprobe 11" ;;
*) sweep="" ;;
esac

# Emulated CPUs are slow: a socket storm of two thousand sockets still shows every close.
export UDPI_STORM_SOCKETS=2000

result() {
	echo "@@RESULT $1 $2"
}

# run NAME BACKEND COMMAND...: one @@RESULT, the log on failure, the time taken.
run() {
	name=$1
	backend=$2
	shift 2
	log=/tmp/$name.log
	start=$(date +%s)
	echo "[$name: started]"
	if UDPI_TEST_BACKEND=$backend "$@" >"$log" 2>&1; then
		result "$name" PASS
	else
		cat "$log"
		result "$name" FAIL
	fi
	echo "[$name: $(($(date +%s) - start)) s] $(tail -n 2 "$log" | head -n 1)"
}

# Which internal paths the tracepoint backend takes on this kernel (for the log).
case " $backends " in
*" tracepoint "*)
	"$cli" --backend tracepoint --verbose --duration 1 2>&1 >/dev/null |
		grep -E "peer stashes|sends counted" | sed 's/^/[tracepoint backend: /; s/$/]/'
	;;
esac

for b in $backends; do
	if [ "$b" = auto ]; then
		# auto is one of the backends above, chosen by probing: the CLI end to end suffices.
		run "integration-auto" auto "$itest" --cli "$cli" '[cli]'
		continue
	fi
	run "integration-$b" "$b" "$itest" --cli "$cli" '[flows],[filters],[cli],[backend]'
	if [ "$b" = "$checksum_unseen" ]; then
		export UDPI_TEST_CHECKSUM_DROPS_UNSEEN=1
	fi
	run "accuracy-$b" "$b" "$atest" "~[host]" # real clients (dig, dnsmasq) are the host's
	unset UDPI_TEST_CHECKSUM_DROPS_UNSEEN
	# As nobody with the three capabilities (each removed in turn); the
	# privileges the kernel asks for differ by backend.
	run "privileges-$b" "$b" "$ptest" --cli "$cli" --setpriv "$setpriv"
done

# kernel.perf_event_paranoid changes the answer for kprobes: above 2 (Debian's
# default is 3) these kernels refuse perf events, and so kprobes, to
# processes without CAP_SYS_ADMIN, which the tracer names; at 2 CAP_PERFMON
# is enough, and the return probes, without tracefs, say why.
case " $backends " in
*" kprobe "*)
	paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)
	if [ "$paranoid" -gt 2 ] && echo 2 >/proc/sys/kernel/perf_event_paranoid; then
		run "privileges-kprobe-perf_event_paranoid-2" kprobe "$ptest" --cli "$cli" --setpriv "$setpriv"
		echo "$paranoid" >/proc/sys/kernel/perf_event_paranoid
	fi
	;;
esac

# Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: the privileges
# tests found it so (and the tracer named it) exactly where it should be.
case "$UDPI_VM_KERNEL" in
5.10) charged=yes ;;
*) charged=no ;;
esac
for b in $backends; do
	[ "$b" = auto ] && continue
	if grep -q "charges BPF memory to RLIMIT_MEMLOCK: $charged" "/tmp/privileges-$b.log"; then
		result "memlock-charged-$charged-$b" PASS
	else
		grep "RLIMIT_MEMLOCK" "/tmp/privileges-$b.log"
		result "memlock-charged-$charged-$b" FAIL
	fi
done

if [ -n "$sweep" ]; then
	sweep_backend=${sweep% *}
	run "syscalls-refused-$sweep_backend" "$sweep_backend" "$ftest" --cli "$cli" --legacy "$legacy" \
		--fail-bpf "$fail_bpf" --sweep-first "${sweep#* }" --sweep-stride 16 '[syscalls]'
	grep "bpf() calls" "/tmp/syscalls-refused-$sweep_backend.log"
fi

if [ -n "$compare" ]; then
	export UDPI_COMPARE_BACKENDS="$compare"
	run "same-flows-under-$(echo "$compare" | tr ' ' '+')" auto "$itest" --cli "$cli" '[compare]'
	unset UDPI_COMPARE_BACKENDS
fi

if [ -n "$auto_expected" ]; then
	"$cli" --duration 1 >/dev/null 2>/tmp/auto.log
	if grep -q "tracing UDP with the $auto_expected backend" /tmp/auto.log; then
		result "auto-chooses-$auto_expected" PASS
	else
		cat /tmp/auto.log
		result "auto-chooses-$auto_expected" FAIL
	fi
fi

for b in $lacking; do
	"$cli" --backend "$b" --duration 1 >/dev/null 2>/tmp/lacking.log
	rc=$?
	if [ "$rc" -eq 1 ] && grep -q "not available" /tmp/lacking.log; then
		result "forced-$b-is-an-error" PASS
	else
		cat /tmp/lacking.log
		result "forced-$b-is-an-error" FAIL
	fi
done
