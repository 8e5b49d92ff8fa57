#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs inside each kernel of the matrix booted with 4 virtual CPUs (busybox
# sh): the threaded accuracy scenarios under each backend, where pre-6.x map
# locking and the per-CPU paths see real interleaving, and SIGKILL of the
# CLI under traffic (on the kprobe backend: its return probes in
# kprobe_events, removed by the next start). Small on purpose: TCG gives
# interleaving, not speed. Prints @@RESULT lines for run-matrix.
#   guest_threads.sh ACCURACY_TESTS FAULTS_TESTS CLI
atest=$1
ftest=$2
cli=$3

case "$UDPI_VM_KERNEL" in
5.10 | 6.1) backends="fentry kprobe" ;;
6.12) backends="fentry kprobe tracepoint" ;;
*) backends="auto" ;;
esac

echo "[guest: $(grep -c ^processor /proc/cpuinfo) CPUs]"

run() {
	name=$1
	backend=$2
	shift 2
	log=/tmp/$name.log
	start=$(date +%s)
	if UDPI_TEST_BACKEND=$backend "$@" >"$log" 2>&1; then
		echo "@@RESULT $name PASS"
	else
		cat "$log"
		echo "@@RESULT $name FAIL"
	fi
	echo "[$name: $(($(date +%s) - start)) s] $(tail -n 2 "$log" | head -n 1)"
}

for b in $backends; do
	run "threads-4cpu-$b" "$b" "$atest" '[threads]'
done
run "sigkill-kprobe" kprobe "$ftest" --cli "$cli" '[kill]'
