#!/usr/bin/env python3
"""sipfarm benchmark driver: sipfarm (memcached farm, R=2) side by side with Kamailio
(in-memory usrloc; usrloc db_mode=3 on PostgreSQL; two nodes replicating with dmq_usrloc),
same machine, same run, same sipp scenarios (bench/sipp/). The authenticated scenarios
(register_auth, call_auth: digest, issue 9) set sipfarm --users against Kamailio WITH_AUTH
(auth_db over a PostgreSQL subscriber table), both knowing the same users.

For every step of a rate ladder it reports the offered and achieved rate, failed calls,
response-time percentiles (sipp -trace_rtt), and the CPU time per request of the proxy
processes (all threads and children, from /proc/PID/stat), of the store processes
(memcached or PostgreSQL) and of the whole box (/proc/stat: loopback charges the receiver's
work to the sender). Steps are repeated, interleaving the systems, and medians reported.

Everything runs on 127.0.0.1 with bounded counts and timeouts, and every process this script
starts is stopped by its pid. Standard library only.

The box figure sums the CPU of every process alive through the step plus the sipp client:
/proc/stat's tick sampling was measured here to miss most of a bursty loopback load.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from lib.authusers import AuthUsers
from lib.load import Uas, measure, run_sipp, users_csv
from lib.procs import log
from lib.report import render
from lib.systems import (DOMAIN, Kamailio, KamailioAuth, KamailioDmq, KamailioPg, Sipfarm, memcached_bytes,
                         sipfarm_has_auth)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


LADDERS = {
    "register": [2000, 4000, 8000, 16000],
    "message": [2000, 4000, 8000],
    "call": [200, 500, 1000, 2000],
    # Rates of authenticated registrations and calls (each twice the requests of the plain one).
    "register_auth": [1000, 2000, 4000, 8000],
    "call_auth": [100, 200, 500, 1000],
}
SMOKE = {"register": [200], "message": [200], "call": [50], "register_auth": [200], "call_auth": [50]}
PLAIN = {"register": "register.xml", "message": "message.xml", "call": "uac.xml"}
# The authenticated scenarios run against systems of their own (sipfarm with --users, Kamailio
# WITH_AUTH): with authentication on, the plain scenarios' requests would be challenged.
AUTH = {"register_auth": "register_auth.xml", "call_auth": "uac_auth.xml"}
AUTH_SYSTEMS = ("sipfarm", "kamailio")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="sipfarm alone, a few seconds per scenario, register_auth too when sipfarm has --users (CI)")
    ap.add_argument("--systems", default="sipfarm,kamailio,kamailio+pg,kamailio+dmq",
                    help="the authenticated scenarios run sipfarm and kamailio only (their WITH_AUTH forms)")
    ap.add_argument("--scenarios", default="register,message,call",
                    help="of register, message, call, register_auth, call_auth")
    ap.add_argument("--transports", default="udp,tcp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per step")
    ap.add_argument("--users", type=int, default=20000, help="distinct users in the injection file")
    ap.add_argument("--ladder", default="", help="override, e.g. register=2000:4000,call=200")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sipfarm"))
    ap.add_argument("--out", default="", help="write the markdown report here too")
    ap.add_argument("--scale", type=int, default=0,
                    help="scale check instead of the ladder: CPU per REGISTER and MESSAGE of sipfarm with "
                         "1,000 then SCALE registered users, and memcached bytes per binding")
    args = ap.parse_args()
    if args.scale:
        return scale(args)

    ladders = dict(SMOKE if args.smoke else LADDERS)
    for part in filter(None, args.ladder.split(",")):
        name, rates = part.split("=")
        ladders[name] = [int(r) for r in rates.split(":")]
    systems_wanted = ["sipfarm"] if args.smoke else args.systems.split(",")
    run = argparse.Namespace(duration=2.0 if args.smoke else args.duration, repeats=1 if args.smoke else args.repeats,
                             transports=args.transports.split(","), ladders=ladders,
                             users=1000 if args.smoke else args.users, smoke=args.smoke)
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in PLAIN and s not in AUTH]
    if unknown:
        ap.error(f"unknown scenarios {unknown}")
    if args.smoke and "register_auth" not in scenarios:
        scenarios.append("register_auth")
    plain = [s for s in scenarios if s in PLAIN]
    auth = [s for s in scenarios if s in AUTH]
    auth_systems = [n for n in systems_wanted if n in AUTH_SYSTEMS]
    if auth:
        for n in systems_wanted:
            if n not in AUTH_SYSTEMS:
                log(f"{n}: no authenticated form, not run for {','.join(auth)}")
        if "sipfarm" in auth_systems and not sipfarm_has_auth(args.binary):
            print(f"{','.join(auth)} for sipfarm skipped: `{args.binary} serve --help` does not list --users and "
                  f"--auth-secret-file (issue 9 not in this build)", flush=True)
            auth_systems.remove("sipfarm")

    work = tempfile.mkdtemp(prefix="sipfarm-bench-")
    results = {}  # (system, scenario, transport, rate) -> [rows]
    try:
        if plain:
            run_plain(args, run, work, systems_wanted, plain, results)
        if auth and auth_systems:
            run_auth(args, run, work, auth_systems, auth, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = render(results, systems_wanted, scenarios, run.transports, ladders, run.repeats, run.duration, args)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    if args.smoke:
        # Not a speed check: a step where most requests fail is broken (a TCP step once
        # passed here with 8 of 400 MESSAGEs delivered).
        broken = [k for k, rows in results.items() if all(r["ok"] <= r["failed"] for r in rows)]
        if broken:
            log(f"smoke: more failed than succeeded in {broken}")
            return 1
    return 0


def start_all(makers, names):
    systems = []
    try:
        for name in names:
            s = makers[name]()
            log(f"starting {name}")
            systems.append(s)
            s.start()
    except BaseException:
        for s in systems:
            s.stop()
        raise
    return systems


def ladder(run, work, systems, scenario, transport, csv, target, keys, extra, results):
    """Every rate of the scenario's ladder, each repeated with the systems interleaved."""
    scen_file = PLAIN.get(scenario) or AUTH[scenario]
    for rate in run.ladders[scenario]:
        for rep in range(run.repeats):
            for s in (systems if rep % 2 == 0 else list(reversed(systems))):
                row = measure(s, work, scen_file, target(s), rate, run.duration, transport, csv, keys, extra)
                results.setdefault((s.name, scenario, transport, rate), []).append(row)
                log(f"{s.name:13} {scenario:13} {transport} {rate:6}/s #{rep}: ok {row['ok']} failed {row['failed']} "
                    f"achieved {row['achieved']:.0f}/s p99 {row['p99']:.1f} ms "
                    f"cpu us/req proxy {row['cpu_proxy']:.1f} store {row['cpu_store']:.1f} box {row['cpu_box']:.1f}")


def contact(transport, port=5999):
    return {"contact_host": "127.0.0.1", "contact_port": port, "contact_transport": transport}


def run_plain(args, run, work, names, scenarios, results):
    # A set of users per scenario and transport (those of MESSAGE and calls bound to the uas
    # of that scenario and transport), so that a one-contact limit never refuses a rebinding.
    def csv_for(scenario, transport):
        path = os.path.join(work, f"{scenario}-{transport}.csv")
        if not os.path.exists(path):
            users_csv(path, run.users, f"{scenario[0]}{transport[0]}")
        return path
    makers = {"sipfarm": lambda: Sipfarm(args.binary), "sipfarm-crate": lambda: Sipfarm(args.binary, pipelined=False),
              "kamailio": Kamailio,
              "kamailio+pg": KamailioPg, "kamailio+dmq": KamailioDmq}
    systems = start_all(makers, names)
    try:
        for transport in run.transports:
            # Every user registered once, pointing at the uas of this transport.
            uas = {}
            for scen, uscen in [("message", "message_uas.xml"), ("call", "uas.xml")]:
                if scen in scenarios:
                    uas[scen] = {s.name: Uas(work, uscen, transport) for s in systems}
            for scenario in scenarios:
                for s in systems:
                    if scenario in uas:
                        u = uas[scenario][s.name]
                        prep = run_sipp(work, "register.xml", s.register_target(), 500 if run.smoke else 2000,
                                        run.users, transport, csv_for(scenario, transport),
                                        contact(transport, u.port), timeout=60)
                        log(f"{s.name} {transport}: registered {prep[0]} users for {scenario} ({prep[1]} failed)")
                        if s.name == "kamailio+dmq":
                            time.sleep(2)
                if scenario == "register":
                    target, keys = (lambda s: s.register_target()), contact(transport)
                else:
                    target, keys = (lambda s: s.call_target()), {}
                ladder(run, work, systems, scenario, transport, csv_for(scenario, transport), target, keys, (), results)
            for per in uas.values():
                for u in per.values():
                    u.stop()
    finally:
        for s in systems:
            s.stop()


def run_auth(args, run, work, names, scenarios, results):
    """register_auth and call_auth against sipfarm --users and Kamailio WITH_AUTH, which know
    the same users (one list written as sipfarm's users file and as subscriber rows)."""
    users = AuthUsers(work, DOMAIN)
    csvs = {(scen, t): users.add(f"{scen}-{t}", run.users, f"a{scen[0]}{t[0]}")
            for scen in scenarios for t in run.transports}
    makers = {"sipfarm": lambda: Sipfarm(args.binary, users=users), "kamailio": lambda: KamailioAuth(users)}
    systems = start_all(makers, names)
    try:
        for transport in run.transports:
            uas = {s.name: Uas(work, "uas.xml", transport) for s in systems} if "call_auth" in scenarios else {}
            for scenario in scenarios:
                csv, callee = csvs[(scenario, transport)]
                if scenario == "register_auth":
                    # sipp's digest uri is "sip:" + -auth_uri: the REGISTER's Request-URI.
                    target, keys, extra = (lambda s: s.register_target()), contact(transport), ["-auth_uri", DOMAIN]
                else:
                    # The one callee of the file (its first line), registered at the uas; the
                    # digest uri is the INVITE's Request-URI (see bench/sipp/uac_auth.xml).
                    for s in systems:
                        ok, failed, _, _ = run_sipp(work, "register_auth.xml", s.register_target(), 10, 1, transport, csv,
                                                    contact(transport, uas[s.name].port), timeout=30,
                                                    extra=["-auth_uri", DOMAIN])
                        log(f"{s.name} {transport}: callee {callee} registered at the uas: "
                            f"{'yes' if ok == 1 else f'no ({failed} failed)'}")
                    target, keys, extra = (lambda s: s.call_target()), {}, ["-auth_uri", f"{callee}@{DOMAIN}"]
                ladder(run, work, systems, scenario, transport, csv, target, keys, extra, results)
            for u in uas.values():
                u.stop()
    finally:
        for s in systems:
            s.stop()


def scale(args):
    """CPU per request with few and with many registered users: two farms side by side (one
    holding 1,000 users, one holding SCALE), measured in turn at the same rate and counts."""
    work = tempfile.mkdtemp(prefix="sipfarm-scale-")
    rate, count = 4000, 20000
    sizes = [1000, args.scale]
    farms = {n: Sipfarm(args.binary) for n in sizes}
    rows = {n: [] for n in sizes}
    per_binding = {}
    uas = None
    try:
        for f in farms.values():
            f.start()
        uas = Uas(work, "message_uas.xml", "udp")
        keys = {"contact_host": "127.0.0.1", "contact_port": uas.port, "contact_transport": "udp"}
        csvs = {}
        for n, f in farms.items():
            csvs[n] = os.path.join(work, f"users-{n}.csv")
            users_csv(csvs[n], n, f"s{n}-")
            before = memcached_bytes(f)
            ok, failed, _, _ = run_sipp(work, "register.xml", f.port, 10000, n, "udp", csvs[n], keys, timeout=120)
            per_binding[n] = (memcached_bytes(f) - before) / max(ok, 1) / f.replicas
            log(f"{n} users registered ({failed} failed); {per_binding[n]:.0f} bytes per binding per replica")
        for rep in range(args.repeats):
            for n in (sizes if rep % 2 == 0 else list(reversed(sizes))):
                f = farms[n]
                reg = measure(f, work, "register.xml", f.port, rate, count / rate, "udp", csvs[n], keys)
                msg = measure(f, work, "message.xml", f.port, rate, count / rate, "udp", csvs[n], {})
                rows[n].append((reg, msg))
                log(f"{n:7} users #{rep}: REGISTER proxy {reg['cpu_proxy']:.1f} store {reg['cpu_store']:.1f} us, "
                    f"MESSAGE proxy {msg['cpu_proxy']:.1f} store {msg['cpu_store']:.1f} us")
    finally:
        if uas:
            uas.stop()
        for f in farms.values():
            f.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = [f"Scale check: {rate}/s, {count} requests per step, {args.repeats} repeats interleaved, medians.\n",
           "| registered users | REGISTER proxy us | REGISTER memcached us | MESSAGE proxy us | "
           "MESSAGE memcached us | failed | memcached bytes per binding (per replica) |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        def med(f, n=n):
            return statistics.median(f(r) for r in rows[n])
        out.append(f"| {n} | {med(lambda r: r[0]['cpu_proxy']):.1f} | {med(lambda r: r[0]['cpu_store']):.1f} | "
                   f"{med(lambda r: r[1]['cpu_proxy']):.1f} | {med(lambda r: r[1]['cpu_store']):.1f} | "
                   f"{sum(r[0]['failed'] + r[1]['failed'] for r in rows[n])} | {per_binding[n]:.0f} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
