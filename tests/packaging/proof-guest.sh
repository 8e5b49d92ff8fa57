#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The systemd proof, inside the guest (a Debian system booted with systemd as
# init, run by udpi-proof.service as root): the packages installed with apt,
# the service enabled and started as an administrator would, its privileges
# and sandbox read from /proc, traffic from udpi-traffic, and the counters of
# its metrics endpoint, then of its JSON output in the journal, held exactly
# to the traffic's ledger. Prints @@RESULT NAME PASS|FAIL lines (and @@INFO).
#   proof-guest.sh DIR    (DIR holds the .debs, udpi-traffic and this script)
set -u
dir=$1
cd "$dir" || exit 1
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
failed=0

result() {
	echo "@@RESULT $1 $2"
	[ "$2" = PASS ] || failed=1
}
info() { echo "@@INFO $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS COMMAND...: until COMMAND succeeds, or the deadline.
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}

# The traffic's ledger, one family: "SENT_DATAGRAMS SENT_BYTES RECEIVED_DATAGRAMS RECEIVED_BYTES".
ledger() { # FILE FAMILY
	grep -o "\"$2\":{[^}]*}" "$1" | awk -F'[:,{}]' '{
		for (i = 1; i < NF; i++) v[$i] = $(i + 1)
		print v["\"sent_datagrams\""], v["\"sent_bytes\""], v["\"received_datagrams\""], v["\"received_bytes\""] }'
}

# The metrics endpoint's four flow counters for comm udpi-traffic, one family,
# summed over its series (containers), in the ledger's order.
metric_sums() { # EXPOSITION FAMILY
	awk -v fam="$2" '
		/^udpintercept_(sent|received)_(bytes|datagrams)_total\{/ && /comm="udpi-traffic"/ &&
		index($0, "family=\"" fam "\"") {
			name = substr($1, 1, index($1, "{") - 1)
			sum[name] += $NF
		}
		END {
			printf "%.0f %.0f %.0f %.0f\n", sum["udpintercept_sent_datagrams_total"],
				sum["udpintercept_sent_bytes_total"], sum["udpintercept_received_datagrams_total"],
				sum["udpintercept_received_bytes_total"]
		}' "$1"
}

# The JSON snapshots' totals for comm udpi-traffic, one family: every flow ends
# with exactly one close, expire or final snapshot carrying its totals.
json_sums() { # JSONL FAMILY
	awk -v fam="$2" '
		function field(name,   m) {
			if (match($0, "\"" name "\":(\"[^\"]*\"|[0-9]+)") == 0) return ""
			m = substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 3)
			gsub(/"/, "", m)
			return m
		}
		field("comm") == "udpi-traffic" && field("family") == fam &&
		(field("event") == "close" || field("event") == "expire" || field("event") == "final") {
			tp += field("tx_packets"); tb += field("tx_bytes")
			rp += field("rx_packets"); rb += field("rx_bytes")
		}
		END { printf "%.0f %.0f %.0f %.0f\n", tp, tb, rp, rb }' "$1"
}

http_get() { # HOST PORT PATH: the response, headers and body
	exec 3<>"/dev/tcp/$1/$2" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
	cat <&3
	exec 3<&-
}

# A scenario subset of the accuracy tier: every kind of traffic, and few
# enough flows that the JSON run stays within journald's rate limit.
traffic() { # LEDGER
	./udpi-traffic "$1" "connected client and server" "unconnected socket with several peers, both ways" \
		"a server reading with recv() learns each peer from the datagram" \
		"sendmmsg and recvmmsg count each message" "zero-length datagrams are datagrams" \
		"an AF_INET6 socket talking to IPv4-mapped peers is IPv4 traffic" \
		"UDP_SEGMENT (GSO) sends count the datagrams on the wire"
}

info "booted: $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s, $(systemctl --version | head -n 1)"
info "kernel.perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)" \
	"kernel.unprivileged_bpf_disabled=$(cat /proc/sys/kernel/unprivileged_bpf_disabled)"

# ---- apt install ./*.deb, as a team deploying it would
t=$(now)
debs=$(ls ./udpintercept_*.deb ./libudpintercept0_*.deb ./udpintercept-legacy_*.deb)
if apt-get install -y --no-install-recommends $debs >apt.log 2>&1; then
	result apt-install-packages PASS
else
	cat apt.log
	result apt-install-packages FAIL
fi
info "apt install took $(since "$t")s"
ok=1
for f in /usr/bin/udpintercept /lib/systemd/system/udpintercept.service /etc/default/udpintercept \
	/usr/share/man/man1/udpintercept.1.gz /usr/share/bash-completion/completions/udpintercept \
	/opt/RealTimeKql/lib/libudpEvent.so; do
	[ -e "$f" ] || { echo "missing: $f"; ok=0; }
done
[ "$ok" = 1 ] && result installed-files PASS || result installed-files FAIL

# Installing does not enable or start it: tracing every socket is the administrator's choice.
if [ "$(systemctl is-enabled udpintercept.service)" = disabled ] &&
	[ "$(systemctl is-active udpintercept.service)" = inactive ]; then
	result installed-not-started PASS
else
	systemctl status --no-pager udpintercept.service
	result installed-not-started FAIL
fi

# ---- systemctl enable --now: Type=notify returns once the tracer is attached
t=$(now)
if timeout 300 systemctl enable --now udpintercept.service && systemctl is-active --quiet udpintercept.service; then
	result enable-now-active PASS
else
	systemctl status --no-pager udpintercept.service
	journalctl -u udpintercept.service --no-pager -o cat | tail -n 30
	result enable-now-active FAIL
fi
info "systemctl enable --now took $(since "$t")s (attached when it returns)"
journalctl -u udpintercept.service --no-pager -o cat | grep -m1 "tracing UDP" | sed 's/^/@@INFO /'

# ---- who it runs as, with what
pid=$(systemctl show -p MainPID --value udpintercept.service)
status=/proc/$pid/status
info "main process $pid: $(grep -E '^(Uid|Gid|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb|Seccomp):' "$status" | tr -s '\t' ' ' | tr '\n' ';')"
cap() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }
three=$(((1 << 39) | (1 << 38) | (1 << 12))) # CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
ok=1
awk '$1 == "Uid:" { exit ($2 == 0 || $3 == 0 || $4 == 0 || $5 == 0) }' "$status" || { echo "runs as root"; ok=0; }
[ "$(awk '$1 == "NoNewPrivs:" { print $2 }' "$status")" = 1 ] || { echo "NoNewPrivs is not set"; ok=0; }
[ $((0x$(cap CapBnd "$status"))) -eq "$three" ] || { echo "bounding set is not the three"; ok=0; }
[ "$(awk '$1 == "Seccomp:" { print $2 }' "$status")" = 2 ] || { echo "no system call filter"; ok=0; }
[ "$ok" = 1 ] && result service-unprivileged-three-capabilities PASS || result service-unprivileged-three-capabilities FAIL

# Once attached it gave up what it no longer uses: never CAP_PERFMON, and the
# metrics server's threads hold nothing at all.
ok=1
for task in /proc/"$pid"/task/*; do
	prm=$((0x$(cap CapPrm "$task/status")))
	name=$(cat "$task/comm")
	if [ "${task##*/}" = "$pid" ]; then
		info "main thread keeps: CapPrm=$(cap CapPrm "$task/status") CapEff=$(cap CapEff "$task/status")"
		[ $((prm & ~((1 << 39) | (1 << 12)))) -eq 0 ] || { echo "main thread keeps more than CAP_BPF, CAP_NET_ADMIN"; ok=0; }
	elif [ "$prm" -ne 0 ]; then
		echo "thread ${task##*/} ($name) keeps capabilities $(cap CapPrm "$task/status")"
		ok=0
	fi
done
[ $((0x$(cap CapAmb "$status"))) -eq 0 ] || { echo "ambient capabilities left"; ok=0; }
[ "$ok" = 1 ] && result capabilities-dropped-once-attached PASS || result capabilities-dropped-once-attached FAIL

systemd-analyze security --no-pager udpintercept.service >security.txt 2>&1
info "systemd-analyze security: $(tail -n 1 security.txt)"

# ---- the metrics endpoint, exactly the traffic's ledger
listen=$(sed -n 's/.*--metrics[ =]\([^ "]*\).*/\1/p' /etc/default/udpintercept)
host=${listen%:*}
port=${listen##*:}
[ "$host" = "$listen" ] && host=127.0.0.1
if wait_for 60 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null &&
	http_get "$host" "$port" /health | grep -q '^HTTP/1.[01] 200'; then
	result metrics-health-200 PASS
else
	result metrics-health-200 FAIL
fi
t=$(now)
if traffic ledger-metrics.json; then
	info "traffic (metrics run) took $(since "$t")s: $(cat ledger-metrics.json)"
else
	result traffic-metrics FAIL
fi
match_metrics() {
	http_get "$host" "$port" /metrics >metrics.txt 2>/dev/null || return 1
	for fam in ipv4 ipv6; do
		[ "$(metric_sums metrics.txt $fam)" = "$(ledger ledger-metrics.json $fam)" ] || return 1
	done
}
if wait_for 60 match_metrics; then
	result metrics-counters-equal-ledger PASS
else
	result metrics-counters-equal-ledger FAIL
fi
for fam in ipv4 ipv6; do
	info "metrics $fam sent/received datagrams and bytes: $(metric_sums metrics.txt $fam); ledger: $(ledger ledger-metrics.json $fam)"
done
# The sandboxed service names the traffic's cgroup from inotify watches: one
# walk of the tree (its first lookup), and the tree watched whole since.
# (The tracer's own figures are refreshed once a second.)
cgroups_watched() {
	http_get "$host" "$port" /metrics >metrics-cgroup.txt 2>/dev/null || return 1
	grep -qx 'udpintercept_cgroup_watching 1' metrics-cgroup.txt &&
		grep -qx 'udpintercept_cgroup_tree_walks_total 1' metrics-cgroup.txt
}
if wait_for 10 cgroups_watched; then
	result cgroup-naming-watched-metrics PASS
else
	result cgroup-naming-watched-metrics FAIL
fi
info "metrics: $(grep -E '^udpintercept_cgroup_' metrics-cgroup.txt | tr '\n' ' ')"

# ---- Restart=on-failure
old=$pid
kill -KILL "$pid"
restarted() {
	local p
	p=$(systemctl show -p MainPID --value udpintercept.service)
	[ "$p" != 0 ] && [ "$p" != "$old" ] && systemctl is-active --quiet udpintercept.service
}
t=$(now)
if wait_for 180 restarted; then
	result restarts-on-failure PASS
else
	systemctl status --no-pager udpintercept.service
	result restarts-on-failure FAIL
fi
info "back after SIGKILL in $(since "$t")s (RestartSec=5s)"

# ---- --json through /etc/default/udpintercept, read back from the journal
sed -i 's/^UDPINTERCEPT_ARGS=.*/UDPINTERCEPT_ARGS="--json"/' /etc/default/udpintercept
cursor=$(journalctl -u udpintercept.service -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
t=$(now)
systemctl restart udpintercept.service || result json-restart FAIL
info "systemctl restart (--json) took $(since "$t")s"
traffic ledger-json.json || result traffic-json FAIL
# A cgroup made after the service started (a transient scope, as a container
# runtime makes one): the sandboxed service names its flow.
systemd-run --quiet --scope --unit=udpi-proof-late -- \
	bash -c 'exec 3>/dev/udp/127.0.0.1/9 && echo late >&3 && sleep 2' || info "systemd-run --scope failed"
# It learnt the scope from inotify watches on the cgroup tree, which its
# sandbox allows (else every new cgroup would cost a walk of the tree).
pid=$(systemctl show -p MainPID --value udpintercept.service)
watches=$(cat /proc/"$pid"/fdinfo/* 2>/dev/null | grep -c '^inotify wd:')
info "the service watches $watches cgroup directories; $(find /sys/fs/cgroup -type d | wc -l) exist"
[ "$watches" -gt 1 ] && result cgroup-tree-watched PASS || result cgroup-tree-watched FAIL
systemctl stop udpintercept.service # the final snapshots, then the summary
journalctl -u udpintercept.service --after-cursor="$cursor" --no-pager -o cat >journal.txt
grep '^{' journal.txt >snapshots.jsonl
ok=1
for fam in ipv4 ipv6; do
	info "journal $fam sent/received datagrams and bytes: $(json_sums snapshots.jsonl $fam); ledger: $(ledger ledger-json.json $fam)"
	[ "$(json_sums snapshots.jsonl $fam)" = "$(ledger ledger-json.json $fam)" ] || ok=0
done
summary=$(grep 'events=' journal.txt | tail -n 1)
case $summary in *" lost=0 "*) ;; *) ok=0 ;; esac
info "$(grep -c . snapshots.jsonl) JSON snapshots in the journal; $summary"
[ "$ok" = 1 ] && result json-journal-equal-ledger PASS || result json-journal-equal-ledger FAIL
late=$(grep '"dport":9,' snapshots.jsonl | grep -c '"cgroup":"[^"]*/udpi-proof-late\.scope"')
info "$late snapshots of the flow from udpi-proof-late.scope name its cgroup: $(grep '"dport":9,' snapshots.jsonl | head -n 1)"
[ "$late" -ge 1 ] && result cgroup-made-after-start-named PASS || result cgroup-made-after-start-named FAIL
if [ "$(systemctl show -p Result --value udpintercept.service)" = success ]; then
	result stops-cleanly PASS
else
	systemctl status --no-pager udpintercept.service
	result stops-cleanly FAIL
fi

info "proof done at uptime $(cut -d' ' -f1 /proc/uptime)s"
exit "$failed"
