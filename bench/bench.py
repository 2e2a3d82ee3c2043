#!/usr/bin/env python3
"""sipfarm benchmark driver: sipfarm (memcached farm, R=2) side by side with Kamailio
(in-memory usrloc; usrloc db_mode=3 on PostgreSQL; two nodes replicating with dmq_usrloc),
same machine, same run, same sipp scenarios (bench/sipp/).

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
import datetime
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIPP_DIR = os.path.join(HERE, "sipp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "example.test"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    while True:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def descendants(pid):
    """pid and every process below it (Kamailio forks its workers; PostgreSQL too)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except OSError:
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    """utime + stime of these processes (all their threads)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def all_ticks():
    """utime + stime of every process on the box, by pid. (/proc/stat's tick sampling was
    measured here to miss most of a bursty load: 12 ticks for the box while the proxy
    alone used 74, so the box figure is summed from the processes instead.)"""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = int(fields[11]) + int(fields[12])
            except OSError:
                pass
    return out


class Proc:
    """A process this script started, stopped by its pid."""

    def __init__(self, cmd, cwd=None, env=None, user=None, quiet=True):
        self.cmd = cmd
        out = subprocess.DEVNULL if quiet else None
        preexec = None
        if user:
            import pwd

            pw = pwd.getpwnam(user)

            def preexec():
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, preexec_fn=preexec)
        self.pid = self.p.pid

    def pids(self):
        return descendants(self.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# ---------------------------------------------------------------- systems under test


class System:
    name = "?"
    uses_store = True

    def start(self):
        raise NotImplementedError

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    def proxy_pids(self):
        raise NotImplementedError

    def store_pids(self):
        return []

    def register_target(self):
        return self.port

    def call_target(self):
        return self.port


class Sipfarm(System):
    def __init__(self, binary, replicas=2, nodes=2, pipelined=True):
        self.name = "sipfarm" if pipelined else "sipfarm-crate"
        self.pipelined = pipelined
        self.binary = binary
        self.replicas = replicas
        self.nodes = nodes
        self.procs = []

    def start(self):
        self.mc = []
        for _ in range(self.nodes):
            port = free_port()
            p = Proc(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "1024", "-M", "-t", "1"])
            self.procs.append(p)
            self.mc.append((p, port))
            if not wait_port(port):
                raise RuntimeError("memcached did not start")
        self.port = free_port()
        nodes = ",".join(f"127.0.0.1:{p}" for _, p in self.mc)
        cmd = [self.binary, "serve", "--listen", f"udp:127.0.0.1:{self.port}", "--listen", f"tcp:127.0.0.1:{self.port}",
               "--domain", DOMAIN, "--memcached", nodes, "--replicas", str(self.replicas), "--max-contacts", "1",
               "--log-level", "warn"]
        if not self.pipelined:
            self.cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            self.cfg.write("[memcached]\npipeline = false\n")
            self.cfg.close()
            cmd += ["--config", self.cfg.name]
        self.sf = Proc(cmd)
        self.procs.append(self.sf)
        if not wait_port(self.port):
            raise RuntimeError("sipfarm did not start")

    def proxy_pids(self):
        return self.sf.pids()

    def store_pids(self):
        return [p.pid for p, _ in self.mc]


KAMAILIO_CFG = os.path.join(HERE, "kamailio", "kamailio.cfg")


class Kamailio(System):
    """Kamailio in memory (db_mode=0)."""

    def __init__(self, defines=None, name="kamailio"):
        self.name = name
        self.defines = defines or []
        self.procs = []

    def kam(self, port, extra_listen=None, defines=None):
        cmd = ["kamailio", "-DD", "-E", "-f", KAMAILIO_CFG, "-m", "256", "-M", "16",
               "-l", f"udp:127.0.0.1:{port}", "-l", f"tcp:127.0.0.1:{port}",
               "-P", os.path.join(self.tmp, f"kam-{port}.pid"), "-Y", self.tmp]
        for l in extra_listen or []:
            cmd += ["-l", l]
        for d in (defines or self.defines):
            cmd += ["-A", d]
        p = Proc(cmd)
        self.procs.append(p)
        if not wait_port(port):
            raise RuntimeError(f"kamailio did not start: {' '.join(cmd)}")
        time.sleep(0.5)
        return p

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-kam-")
        self.port = free_port()
        self.k = self.kam(self.port)

    def proxy_pids(self):
        return self.k.pids()

    def stop(self):
        super().stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class KamailioPg(Kamailio):
    """Kamailio with usrloc db_mode=3 on a PostgreSQL cluster of its own."""

    def __init__(self):
        super().__init__(name="kamailio+pg")

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-kampg-")
        os.chmod(self.tmp, 0o777)
        pgbin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
        pgbin = f"/usr/lib/postgresql/{pgbin}/bin"
        data = os.path.join(self.tmp, "pg")
        subprocess.run(["runuser", "-u", "postgres", "--", f"{pgbin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL)
        self.pgport = free_port()
        self.pg = Proc(["runuser", "-u", "postgres", "--", f"{pgbin}/postgres", "-D", data, "-p", str(self.pgport),
                        "-k", self.tmp, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
        self.procs.append(self.pg)
        if not wait_port(self.pgport):
            raise RuntimeError("postgres did not start")
        psql = ["psql", "-q", "-h", "127.0.0.1", "-p", str(self.pgport), "-U", "postgres"]
        subprocess.run(psql + ["-c", "CREATE USER kamailio PASSWORD 'kamailio'"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(psql + ["-c", "CREATE DATABASE kamailio OWNER kamailio"], check=True, stdout=subprocess.DEVNULL)
        for f in ["standard-create.sql", "usrloc-create.sql"]:
            subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-p", str(self.pgport), "-U", "kamailio", "-d", "kamailio",
                            "-f", f"/usr/share/kamailio/postgres/{f}"], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, PGPASSWORD="kamailio"))
        self.port = free_port()
        self.k = self.kam(self.port, defines=["WITH_PG", f'DBURL="postgres://kamailio:kamailio@127.0.0.1:{self.pgport}/kamailio"'])

    def store_pids(self):
        return self.pg.pids()


class KamailioDmq(Kamailio):
    """Two Kamailio nodes replicating usrloc with dmq_usrloc: REGISTER through the first,
    MESSAGE and calls through the second; both nodes' CPU counted as the proxy's."""

    def __init__(self):
        super().__init__(name="kamailio+dmq")

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-kamdmq-")
        self.port = free_port()
        self.port2 = free_port()
        d1, d2 = free_port(), free_port()
        self.k = self.kam(self.port, [f"udp:127.0.0.1:{d1}"],
                          ["WITH_DMQ", f'DMQ_SERVER="sip:127.0.0.1:{d1}"', f'DMQ_PEER="sip:127.0.0.1:{d2}"'])
        self.k2 = self.kam(self.port2, [f"udp:127.0.0.1:{d2}"],
                           ["WITH_DMQ", f'DMQ_SERVER="sip:127.0.0.1:{d2}"', f'DMQ_PEER="sip:127.0.0.1:{d1}"'])
        time.sleep(2)  # let the nodes find each other

    def proxy_pids(self):
        return self.k.pids() + self.k2.pids()

    def call_target(self):
        return self.port2


# ---------------------------------------------------------------- sipp


def users_csv(path, n, prefix="u"):
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(n):
            f.write(f"{prefix}{i:07d}\n")


def sipp_transport(t):
    return {"udp": "un", "tcp": "t1"}[t]


def run_sipp(work, scenario, port, rate, count, transport, csv, keys, timeout):
    """Run one sipp client step; returns (successful, failed, elapsed seconds, rtts in ms)."""
    local = free_port()
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", os.path.join(SIPP_DIR, scenario), "-inf", csv,
           "-r", str(rate), "-m", str(count), "-l", str(max(rate * 4, 100)), "-t", sipp_transport(transport),
           "-i", "127.0.0.1", "-p", str(local), "-nostdin", "-key", "domain", DOMAIN,
           "-timeout", f"{timeout}s", "-timeout_error", "-recv_timeout", "3000", "-max_socket", "2000",
           "-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "1"]
    for k, v in keys.items():
        cmd += ["-key", k, str(v)]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    try:
        _, err = proc.communicate(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    elapsed = time.time() - start
    err = err or ""
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


def measure(system, work, scenario, port, rate, duration, transport, csv, keys):
    count = max(1, int(rate * duration))
    proxy, store = system.proxy_pids(), system.store_pids()
    c0, s0, a0, k0 = cpu_ticks(proxy), cpu_ticks(store), all_ticks(), children_cpu()
    ok, failed, elapsed, rtts = run_sipp(work, scenario, port, rate, count, transport, csv, keys,
                                         timeout=int(duration * 2 + 10))
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


LADDERS = {
    "register": [2000, 4000, 8000, 16000],
    "message": [2000, 4000, 8000],
    "call": [200, 500, 1000, 2000],
}
SMOKE = {"register": [200], "message": [200], "call": [50]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="sipfarm alone, a few seconds per scenario (CI)")
    ap.add_argument("--systems", default="sipfarm,kamailio,kamailio+pg,kamailio+dmq")
    ap.add_argument("--scenarios", default="register,message,call")
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
    duration = 2.0 if args.smoke else args.duration
    repeats = 1 if args.smoke else args.repeats
    scenarios = args.scenarios.split(",")
    transports = args.transports.split(",")

    work = tempfile.mkdtemp(prefix="sipfarm-bench-")
    # A set of users per scenario and transport (those of MESSAGE and calls bound to the uas
    # of that scenario and transport), so that a one-contact limit never refuses a rebinding.
    def csv_for(scenario, transport):
        path = os.path.join(work, f"{scenario}-{transport}.csv")
        if not os.path.exists(path):
            users_csv(path, args.users, f"{scenario[0]}{transport[0]}")
        return path
    makers = {"sipfarm": lambda: Sipfarm(args.binary), "sipfarm-crate": lambda: Sipfarm(args.binary, pipelined=False),
              "kamailio": Kamailio,
              "kamailio+pg": KamailioPg, "kamailio+dmq": KamailioDmq}
    results = {}  # (system, scenario, transport, rate) -> [rows]
    systems = []
    try:
        for name in systems_wanted:
            s = makers[name]()
            log(f"starting {name}")
            s.start()
            systems.append(s)
        for transport in transports:
            # Every user registered once, pointing at the uas of this transport.
            uas = {}
            for scen, uscen in [("message", "message_uas.xml"), ("call", "uas.xml")]:
                if scen in scenarios:
                    uas[scen] = {s.name: Uas(work, uscen, transport) for s in systems}
            for scenario in scenarios:
                scen_file = {"register": "register.xml", "message": "message.xml", "call": "uac.xml"}[scenario]
                for s in systems:
                    if scenario in uas:
                        u = uas[scenario][s.name]
                        prep = run_sipp(work, "register.xml", s.register_target(), 2000 if not args.smoke else 500,
                                        args.users if not args.smoke else 1000, transport, csv_for(scenario, transport),
                                        {"contact_host": "127.0.0.1", "contact_port": u.port,
                                         "contact_transport": transport}, timeout=60)
                        log(f"{s.name} {transport}: registered {prep[0]} users for {scenario} ({prep[1]} failed)")
                        if s.name == "kamailio+dmq":
                            time.sleep(2)
                for rate in ladders[scenario]:
                    for rep in range(repeats):
                        for s in (systems if rep % 2 == 0 else list(reversed(systems))):
                            if scenario == "register":
                                port, keys = s.register_target(), {"contact_host": "127.0.0.1", "contact_port": 5999,
                                                                   "contact_transport": transport}
                            else:
                                port, keys = s.call_target(), {}
                            row = measure(s, work, scen_file, port, rate, duration, transport,
                                          csv_for(scenario, transport), keys)
                            results.setdefault((s.name, scenario, transport, rate), []).append(row)
                            log(f"{s.name:13} {scenario:8} {transport} {rate:6}/s #{rep}: ok {row['ok']} failed {row['failed']} "
                                f"achieved {row['achieved']:.0f}/s p99 {row['p99']:.1f} ms "
                                f"cpu us/req proxy {row['cpu_proxy']:.1f} store {row['cpu_store']:.1f} box {row['cpu_box']:.1f}")
            for per in uas.values():
                for u in per.values():
                    u.stop()
    finally:
        for s in systems:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)

    report = render(results, systems_wanted, scenarios, transports, ladders, repeats, duration, args)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    if args.smoke:
        dead = [k for k, rows in results.items() if all(r["ok"] == 0 for r in rows)]
        if dead:
            log(f"smoke: no successful call in {dead}")
            return 1
    return 0


def memcached_bytes(system):
    total = 0
    for _, port in system.mc:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode().splitlines():
            if line.startswith("STAT bytes "):
                total += int(line.split()[2])
    return total


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


if __name__ == "__main__":
    sys.exit(main())
