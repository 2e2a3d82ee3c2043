"""The markdown report of a ladder run: one row per system, scenario, transport and rate
(medians of the repeats), then the ratios of sipfarm to every other system."""

import datetime
import os
import subprocess

from lib.load import median_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def render(results, systems, scenarios, transports, ladders, repeats, duration, args):
    def commit():
        try:
            return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
        except OSError:
            return "?"

    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    out = []
    out.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
               f"{os.cpu_count()} cores ({model}), load average before the report {' '.join(load)}; "
               f"{repeats} repeat(s) of {duration:g} s per step, systems interleaved, medians. "
               f"CPU is microseconds of CPU time per successful request (call = whole call flow).\n")
    if any(key[1].endswith("_auth") for key in results):
        out.append("Authenticated scenarios (digest, qop=auth, MD5: the only algorithm sipp answers): sipfarm with "
                   "--users and --auth-secret-file (memcached R=2; store = memcached) against Kamailio WITH_AUTH "
                   "(usrloc in memory, auth_db over PostgreSQL with stored HA1s; store = PostgreSQL), the same users. "
                   "register_auth: one successful request = one authenticated registration, i.e. REGISTER, 401, "
                   "REGISTER with credentials, 200 (two requests counted once); its offered rate is of "
                   "registrations. call_auth: one = a whole call, INVITE, 407, ACK, INVITE with credentials, "
                   "180/200, ACK, BYE, 200.\n")
    out.append("| system | scenario | transport | offered/s | achieved/s | failed | p50 ms | p95 ms | p99 ms | "
               "proxy us | store us | proxy+store us | box us |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        for transport in transports:
            for rate in ladders[scenario]:
                for s in systems:
                    rows = results.get((s, scenario, transport, rate))
                    if not rows:
                        continue
                    m = {k: median_of(rows, k) for k in rows[0]}
                    out.append(f"| {s} | {scenario} | {transport} | {rate} | {m['achieved']:.0f} | "
                               f"{sum(r['failed'] for r in rows)} | {m['p50']:.2f} | {m['p95']:.2f} | {m['p99']:.2f} | "
                               f"{m['cpu_proxy']:.1f} | {m['cpu_store']:.1f} | {m['cpu_proxy'] + m['cpu_store']:.1f} | "
                               f"{m['cpu_box']:.1f} |")
    if "sipfarm" in systems and len(systems) > 1:
        out.append("\nRatios sipfarm / other (median CPU per request; < 1 means sipfarm spends less):\n")
        out.append("| other | scenario | transport | offered/s | proxy ratio | proxy+store ratio | box ratio | "
                   "both passed |")
        out.append("|---|---|---|---:|---:|---:|---:|---|")
        for other in systems:
            if other == "sipfarm":
                continue
            for scenario in scenarios:
                for transport in transports:
                    for rate in ladders[scenario]:
                        a = results.get(("sipfarm", scenario, transport, rate))
                        b = results.get((other, scenario, transport, rate))
                        if not a or not b:
                            continue
                        ma = {k: median_of(a, k) for k in a[0]}
                        mb = {k: median_of(b, k) for k in b[0]}

                        def ratio(x, y):
                            return x / y if y > 0 else float("nan")

                        passed = all(r["failed"] == 0 for r in a + b)
                        out.append(f"| {other} | {scenario} | {transport} | {rate} | "
                                   f"{ratio(ma['cpu_proxy'], mb['cpu_proxy']):.2f} | "
                                   f"{ratio(ma['cpu_proxy'] + ma['cpu_store'], mb['cpu_proxy'] + mb['cpu_store']):.2f} | "
                                   f"{ratio(ma['cpu_box'], mb['cpu_box']):.2f} | {'yes' if passed else 'no'} |")
    return "\n".join(out) + "\n"
