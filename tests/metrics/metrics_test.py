#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The metrics tier: udpintercept --metrics as an operator runs it.

  prometheus  A real Prometheus server scrapes the CLI every second while
              udpi-traffic runs every scenario of the accuracy tier from a
              cgroup named as Docker names a container; the server's sums by
              comm (and by family, and by container) of the five flow
              counters (drops among them) must equal the generator's
              ledger exactly, with one series per family; promtool must
              accept the exposition.
  tsan        The CLI built with ThreadSanitizer serves scrapes and /health
              from civetweb's threads while its tracer thread aggregates the
              generator's traffic; the exposition's sums must equal the
              ledger, and the run must end without a report.

Root only: exits 77 without root, 1 in CI (CI=true), where nothing may skip.
Python's standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

COMM = "udpi-traffic"
# A container id as Docker's systemd driver names its scope.
CONTAINER = "5eed" * 16
COUNTERS = {
    "udpintercept_sent_bytes_total": "sent_bytes",
    "udpintercept_sent_datagrams_total": "sent_datagrams",
    "udpintercept_received_bytes_total": "received_bytes",
    "udpintercept_received_datagrams_total": "received_datagrams",
    "udpintercept_received_drops_total": "received_drops",
}


class Failure(Exception):
    pass


def require_root():
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        print("metrics_test: needs root, and CI must not skip", file=sys.stderr)
        sys.exit(1)
    print("metrics_test: skipped: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) to load BPF",
          file=sys.stderr)
    sys.exit(77)


def wait_until(what, predicate, timeout, poll=0.1):
    """predicate() until it returns something true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def http_get(url, timeout=5):
    """(status, body) of a GET; a refused connection is (None, error text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return None, str(e)


def cgroup2_mount():
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1]
    raise Failure("cgroup v2 is not mounted")


class ContainerCgroup:
    """A cgroup v2 directory named as Docker's systemd driver names a container."""

    def __init__(self):
        self.top = os.path.join(cgroup2_mount(), f"udpi-metrics-test-{os.getpid()}.slice")
        self.path = os.path.join(self.top, f"docker-{CONTAINER}.scope")
        os.makedirs(self.path)

    def enter(self):
        """For preexec_fn: moves the child about to exec into the cgroup."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))

    def remove(self):
        for d in (self.path, self.top):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass


class Cli:
    """The CLI with its stderr read by a thread, line by line."""

    def __init__(self, command):
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def stderr(self):
        with self.lock:
            return "\n".join(self.lines)

    def check_alive(self):
        if self.proc.poll() is not None:
            self.reader.join(10)
            raise Failure(f"the CLI exited ({self.proc.returncode}):\n{self.stderr()}")

    def wait_line(self, pattern, timeout):
        def found():
            if self.proc.poll() is not None and not self.reader.is_alive():
                raise Failure(f"the CLI exited ({self.proc.returncode}):\n{self.stderr()}")
            m = re.search(pattern, self.stderr())
            return m
        return wait_until(f"'{pattern}' from the CLI", found, timeout)

    def stop(self, timeout=60):
        """SIGINT, as an operator stops it; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"the CLI did not stop within {timeout} s:\n{self.stderr()}")
        self.reader.join(10)
        return self.proc.returncode


def start_cli(command, cli_args):
    backend = os.environ.get("UDPI_TEST_BACKEND")
    args = command + ["--metrics", "127.0.0.1:0", "--quiet"] + cli_args
    if backend:
        args += ["--backend", backend]
    cli = Cli(args)
    url = cli.wait_line(r"serving metrics at (http://127\.0\.0\.1:\d+)/metrics", 60).group(1)
    cli.wait_line(r"tracing UDP with the", 120)
    return cli, url


def run_traffic(traffic, cgroup, ledger_path, seconds, names=()):
    """The generator in the container's cgroup for rounds of at least `seconds`; returns its ledger."""
    started = time.monotonic()
    r = subprocess.run([traffic, "--min-seconds", str(seconds), ledger_path, *names],
                       preexec_fn=cgroup.enter, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise Failure(f"udpi-traffic failed ({r.returncode}): {r.stderr}")
    with open(ledger_path) as f:
        ledger = json.load(f)
    print(f"udpi-traffic: {ledger['runs']} scenario runs ({ledger['rounds']} rounds) in "
          f"{time.monotonic() - started:.1f} s: {ledger}")
    return ledger


def expected(ledger):
    """{(counter, family): value} and {counter: total} of the ledger."""
    by_family = {(m, fam): ledger[fam][field] for m, field in COUNTERS.items() for fam in ("ipv4", "ipv6")}
    total = {m: ledger["ipv4"][field] + ledger["ipv6"][field] for m, field in COUNTERS.items()}
    return by_family, total


def parse_exposition(text):
    """[(name, {label: value}, value)] of a text exposition's samples."""
    samples = []
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        if not m:
            raise Failure(f"not a sample line: {line!r}")
        labels = dict(label.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def promtool_check(promtool, exposition):
    r = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise Failure(f"promtool check metrics failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, binary, target, workdir):
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: udpintercept\n"
                    "    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("Prometheus to be ready", self._ready, 60)

    def _ready(self):
        if self.proc.poll() is not None:
            raise Failure(f"prometheus exited ({self.proc.returncode}); see {self.log.name}")
        return http_get(self.url + "/-/ready", timeout=2)[0] == 200

    def query(self, promql):
        status, body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if status != 200:
            raise Failure(f"query {promql!r}: HTTP {status}: {body}")
        reply = json.loads(body)
        if reply.get("status") != "success":
            raise Failure(f"query {promql!r}: {body}")
        return reply["data"]["result"]

    def last_scrape(self):
        """The time of the newest scrape of the CLI that succeeded, or 0."""
        result = self.query('timestamp(up{job="udpintercept"} == 1)')
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def value(sample):
    v = float(sample["value"][1])
    return int(v) if v.is_integer() else v


def prometheus_sums(prom):
    """What the server says of the generator's command, by family and in total."""
    by_family, total = {}, {}
    for metric in COUNTERS:
        for s in prom.query(f'sum by (comm, family) ({metric}{{comm="{COMM}"}})'):
            by_family[(metric, s["metric"]["family"])] = value(s)
        for s in prom.query(f'sum by (comm) ({metric}{{comm="{COMM}"}})'):
            total[metric] = value(s)
    return by_family, total


def check_idle_clients(base):
    """Clients that connect and say nothing shut out no scrape and no health probe."""
    host, port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        for path in ("/health", "/metrics"):
            started = time.monotonic()
            status, _ = http_get(base + path, timeout=3)
            if status != 200:
                raise Failure(f"{path} with 4 idle connections open: {status} after "
                              f"{time.monotonic() - started:.1f} s")
    finally:
        for s in idle:
            s.close()


def test_prometheus(args):
    workdir = tempfile.mkdtemp(prefix="udpi-metrics-")
    cgroup = ContainerCgroup()
    cli = prom = None
    started = time.monotonic()
    try:
        cli, base = start_cli([args.cli], [])
        status, body = http_get(base + "/health")
        if status != 200 or body != "ok\n":
            raise Failure(f"/health while tracing: {status} {body!r}")
        check_idle_clients(base)
        prom = Prometheus(args.prometheus, base[len("http://"):], workdir)
        wait_until("Prometheus's first scrape of the CLI", prom.last_scrape, 30)

        # Rounds of every scenario for 5 s: scrapes fall while traffic flows.
        ledger = run_traffic(args.traffic, cgroup, os.path.join(workdir, "ledger.json"), 5)
        want_by_family, want_total = expected(ledger)
        done = time.time()

        # Exact once the CLI has every close and a scrape has taken it; then
        # held through two more scrapes (a counter that went past the ledger
        # would show there).
        got = {}

        def exact():
            cli.check_alive()
            got["sums"] = prometheus_sums(prom)
            return got["sums"] == (want_by_family, want_total)
        try:
            wait_until("Prometheus's sums to equal the ledger", exact, 60, poll=0.25)
        except Failure as e:
            raise Failure(f"{e}\n  ledger:     {(want_by_family, want_total)}\n"
                          f"  prometheus: {got.get('sums')}")
        for _ in range(2):
            seen = prom.last_scrape()
            wait_until("another scrape", lambda: prom.last_scrape() > seen, 30)
            if not exact():
                raise Failure(f"the sums moved past the ledger: {got['sums']}")
        if prom.last_scrape() < done:
            raise Failure("no scrape after the generator ended")

        # Labels stay bounded: one series per family, in the container's
        # name, over the whole run; none ever went down while scraped.
        for metric in COUNTERS:
            series = prom.query(f'count_over_time({metric}{{comm="{COMM}"}}[10m])')
            labels = sorted((s["metric"].get("family"), s["metric"].get("container")) for s in series)
            if labels != [("ipv4", CONTAINER), ("ipv6", CONTAINER)]:
                raise Failure(f"the generator's series of {metric}: {labels}")
            resets = prom.query(f'sum(resets({metric}{{comm="{COMM}"}}[10m]))')
            if value(resets[0]) != 0:
                raise Failure(f"{metric} went down while scraped: {resets}")
        changes = prom.query(f'changes(udpintercept_sent_bytes_total{{comm="{COMM}",family="ipv4"}}[10m])')
        if value(changes[0]) < 2:
            raise Failure(f"fewer than two scrapes saw the traffic move: {changes}")
        for metric in COUNTERS:
            by_container = prom.query(f'sum by (container) ({metric}{{container="{CONTAINER}"}})')
            if len(by_container) != 1 or value(by_container[0]) != want_total[metric]:
                raise Failure(f"sum by (container) of {metric}: {by_container}, ledger {want_total[metric]}")
        print(f"series for {COMM}: 2 per counter; the ipv4 bytes changed in {value(changes[0])} scrapes; "
              "every sum equals the ledger")

        # The tracer's own figures are there, and the exposition passes promtool.
        info = prom.query("udpintercept_build_info")
        if len(info) != 1 or not info[0]["metric"].get("backend") or value(info[0]) != 1:
            raise Failure(f"udpintercept_build_info: {info}")
        for name in ("udpintercept_flows_active", "udpintercept_snapshots_lost_total",
                     "udpintercept_closes_deferred_total",
                     "udpintercept_untracked_flows_total", "udpintercept_untracked_datagrams_total",
                     "udpintercept_untracked_bytes_total", "udpintercept_peer_unknown_total",
                     "udpintercept_no_listener_datagrams_total", "udpintercept_series_overflow_total",
                     "udpintercept_program_runs_missed_total"):
            if len(prom.query(name)) != 1:
                raise Failure(f"{name} is not exported")
        if value(prom.query("udpintercept_series_overflow_total")[0]) != 0:
            raise Failure("series overflowed under the default limit")
        # The generator's cgroup was named from inotify watches: one walk of the tree, at the
        # first lookup, and every directory watched since.
        naming = {name: prom.query(name) for name in ("udpintercept_cgroup_watching",
                                                      "udpintercept_cgroup_tree_walks_total",
                                                      "udpintercept_cgroup_directories_watched")}
        if any(len(v) != 1 for v in naming.values()):
            raise Failure(f"the cgroup naming figures are not exported: {naming}")
        watching, walks, watched = (value(v[0]) for v in naming.values())
        if watching != 1 or walks != 1 or watched < 1:
            raise Failure(f"cgroup naming: watching {watching}, {walks} walks, {watched} directories watched")
        print(f"cgroup names: watching, {walks} walk, {watched} directories watched")
        status, exposition = http_get(base.rstrip("/") + "/metrics")
        if status != 200:
            raise Failure(f"/metrics: HTTP {status}")
        promtool_check(args.promtool, exposition)

        rc = cli.stop()
        if rc != 0 or "events=" not in cli.stderr():
            raise Failure(f"the CLI exited {rc}:\n{cli.stderr()}")
        if http_get(base + "/health", timeout=2)[0] is not None:
            raise Failure("/health still answers after the CLI exited")
        print(f"prometheus test: {time.monotonic() - started:.1f} s")
    finally:
        if cli and cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait()
        if prom:
            prom.stop()
        cgroup.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def test_tsan(args):
    """Scrapes and health probes from several threads while the tracer's thread aggregates."""
    workdir = tempfile.mkdtemp(prefix="udpi-metrics-tsan-")
    cgroup = ContainerCgroup()
    wrap = [args.setarch, "-R"] if args.setarch else []
    cli = None
    try:
        cli, base = start_cli(wrap + [args.cli], ["--metrics-labels", "remote_port,local_port,pid"])
        stop = threading.Event()
        errors = []
        scrapes = [0]

        def scrape(path):
            while not stop.is_set():
                status, _ = http_get(base + path)
                if status != 200:
                    errors.append(f"{path}: {status}")
                    return
                scrapes[0] += 1
        scrapers = [threading.Thread(target=scrape, args=(p,)) for p in ("/metrics", "/metrics", "/health")]
        for t in scrapers:
            t.start()
        ledger = run_traffic(args.traffic, cgroup, os.path.join(workdir, "ledger.json"), 3,
                             ["connected client and server", "many threads on one socket",
                              "a socket shared with a forked child: exact totals, newest process named"])
        _, want = expected(ledger)

        def exact():
            cli.check_alive()
            sums = {m: 0 for m in COUNTERS}
            for name, labels, v in parse_exposition(http_get(base + "/metrics")[1]):
                if name in sums and labels.get("comm") == COMM:
                    sums[name] += v
            return sums == want
        wait_until("the exposition's sums to equal the ledger", exact, 60, poll=0.25)
        stop.set()
        for t in scrapers:
            t.join()
        cli.check_alive()
        if errors:
            raise Failure(f"scrapes failed: {errors}")
        rc = cli.stop()
        if rc != 0 or "ThreadSanitizer" in cli.stderr():
            raise Failure(f"the CLI under ThreadSanitizer exited {rc}:\n{cli.stderr()}")
        print(f"tsan test: {scrapes[0]} requests served during the traffic, no report")
    finally:
        if cli and cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait()
        cgroup.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["prometheus", "tsan"])
    parser.add_argument("--cli", required=True)
    parser.add_argument("--traffic", required=True)
    parser.add_argument("--prometheus", default=shutil.which("prometheus"))
    parser.add_argument("--promtool", default=shutil.which("promtool"))
    parser.add_argument("--setarch", default=None)
    args = parser.parse_args()
    require_root()
    if args.mode == "prometheus" and not (args.prometheus and args.promtool):
        print("metrics_test: prometheus and promtool are needed (Debian's prometheus package; "
              "scripts/dev deps installs it)", file=sys.stderr)
        sys.exit(1 if os.environ.get("CI") == "true" else 77)
    try:
        (test_prometheus if args.mode == "prometheus" else test_tsan)(args)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
