"""sipp runs against a system (the scenarios of bench/sipp) and the figures of one step:
achieved rate, failed calls, response times, CPU per request."""

import os
import resource
import statistics
import tempfile
import time

from lib.procs import CLK_TCK, Proc, all_ticks, cpu_ticks, free_port, log
from lib.systems import DOMAIN

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIPP_DIR = os.path.join(BENCH, "sipp")


def users_csv(path, n, prefix="u"):
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(n):
            f.write(f"{prefix}{i:07d}\n")


def sipp_transport(t):
    return {"udp": "un", "tcp": "t1"}[t]


def run_sipp(work, scenario, port, rate, count, transport, csv, keys, timeout, extra=()):
    """Run one sipp client step; returns (successful, failed, elapsed seconds, rtts in ms).
    extra: more sipp options (-auth_uri for the authenticated scenarios)."""
    local = free_port()
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", os.path.join(SIPP_DIR, scenario), "-inf", csv,
           "-r", str(rate), "-m", str(count), "-l", str(max(rate * 4, 100)), "-t", sipp_transport(transport),
           "-i", "127.0.0.1", "-p", str(local), "-nostdin", "-key", "domain", DOMAIN,
           "-timeout", f"{timeout}s", "-timeout_error", "-recv_timeout", "3000", "-max_socket", "2000",
           "-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "1"]
    for k, v in keys.items():
        cmd += ["-key", k, str(v)]
    cmd += list(extra)
    start = time.time()
    with tempfile.TemporaryFile("w+", errors="replace") as errfile:
        proc = Proc(cmd, cwd=work, stderr=errfile)
        if proc.wait(timeout + 15) is None:
            proc.stop()
        elapsed = time.time() - start
        errfile.seek(0)
        err = errfile.read()
    base = os.path.splitext(scenario)[0]
    stat = rtt = None
    for f in os.listdir(work):
        if f.startswith(base + "_") and f.endswith("_.csv"):
            stat = os.path.join(work, f)
        if f.startswith(base + "_") and f.endswith("_rtt.csv"):
            rtt = os.path.join(work, f)
    ok = failed = 0
    if stat:
        lines = open(stat).read().splitlines()
        head = lines[0].split(";")
        last = lines[-1].split(";")
        ok = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
        os.remove(stat)
    rtts = []
    if rtt:
        for line in open(rtt).read().splitlines()[1:]:
            f = line.split(";")
            try:
                rtts.append(float(f[1]))
            except (IndexError, ValueError):
                pass
        os.remove(rtt)
    if proc.returncode not in (0, 1) and ok == 0:
        log(f"sipp exited {proc.returncode}: {' '.join(cmd)}\n{err[-600:]}")
    if "authentication must use MD5" in err:
        # sipp 3.6.1 answers the first challenge only and computes MD5 only: a first
        # challenge with another algorithm ends the run (bench/lib/sipp_auth_probe.py).
        log("sipp: the server's first challenge is not MD5; sipp 3.6.1 answers only the first "
            "challenge of a 401/407 and only MD5, so the server must offer MD5 first for this bench")
    return ok, failed, elapsed, rtts


def children_cpu():
    """CPU seconds of every child this script has waited for (the sipp clients)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Uas:
    def __init__(self, work, scenario, transport):
        self.port = free_port()
        self.p = Proc(["sipp", "-sf", os.path.join(SIPP_DIR, scenario), "-t", sipp_transport(transport),
                       "-i", "127.0.0.1", "-p", str(self.port), "-nostdin", "-max_socket", "2000"], cwd=work)
        time.sleep(0.3)

    def stop(self):
        self.p.stop()


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(system, work, scenario, port, rate, duration, transport, csv, keys, extra=()):
    count = max(1, int(rate * duration))
    proxy, store = system.proxy_pids(), system.store_pids()
    c0, s0, a0, k0 = cpu_ticks(proxy), cpu_ticks(store), all_ticks(), children_cpu()
    ok, failed, elapsed, rtts = run_sipp(work, scenario, port, rate, count, transport, csv, keys,
                                         timeout=int(duration * 2 + 10), extra=extra)
    c1, s1, a1, k1 = cpu_ticks(proxy), cpu_ticks(store), all_ticks(), children_cpu()
    # The box: every process that lived through the step, plus the sipp client that ended.
    b0 = 0
    b1 = sum(t - a0[p] for p, t in a1.items() if p in a0 and p != os.getpid()) + (k1 - k0) * CLK_TCK
    if os.environ.get("BENCH_DEBUG"):
        log(f"ticks: proxy {c1 - c0} store {s1 - s0} box {b1 - b0:.0f} pids {proxy} {store}")
    us = 1e6 / CLK_TCK
    done = max(ok, 1)
    return {
        "offered": rate, "count": count, "ok": ok, "failed": failed, "elapsed": elapsed,
        "achieved": ok / elapsed if elapsed > 0 else 0.0,
        "p50": pct(rtts, 0.50), "p95": pct(rtts, 0.95), "p99": pct(rtts, 0.99),
        "cpu_proxy": (c1 - c0) * us / done, "cpu_store": (s1 - s0) * us / done, "cpu_box": (b1 - b0) * us / done,
    }


def median_of(rows, key):
    vals = [r[key] for r in rows if r[key] == r[key]]
    return statistics.median(vals) if vals else float("nan")
