"""The systems under test: sipfarm (memcached farm) and Kamailio (in memory, on PostgreSQL,
two nodes with dmq_usrloc), each started and stopped with the processes it needs; and both
with digest authentication (sipfarm --users/--auth-secret-file, Kamailio WITH_AUTH with
auth_db on PostgreSQL) for the authenticated scenarios."""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

from lib.procs import Proc, free_port, wait_port

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAMAILIO_CFG = os.path.join(BENCH, "kamailio", "kamailio.cfg")
DOMAIN = "example.test"


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


def sipfarm_has_auth(binary):
    """Whether this sipfarm build has issue 9's flags (`serve --help` lists --users)."""
    try:
        r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--users" in r.stdout + r.stderr and "--auth-secret-file" in r.stdout + r.stderr


class Sipfarm(System):
    def __init__(self, binary, replicas=2, nodes=2, pipelined=True, users=None):
        """users: an authusers.AuthUsers whose users file sipfarm loads (--users), with a
        secret file of its own (--auth-secret-file); None for no authentication."""
        self.name = "sipfarm" if pipelined else "sipfarm-crate"
        self.pipelined = pipelined
        self.binary = binary
        self.replicas = replicas
        self.nodes = nodes
        self.users = users
        self.procs = []

    def start(self):
        # Each memcached node on a loopback address of its own (127.0.0.2, .3, ...), as on
        # hosts of their own: sipfarm refuses a Contact or Path naming a node's address
        # (whatever the port), and the uas and sipp contacts are on 127.0.0.1.
        self.mc = []
        for i in range(self.nodes):
            host = f"127.0.0.{2 + i}"
            port = free_port(host)
            p = Proc(["memcached", "-u", "root", "-l", host, "-p", str(port), "-U", "0", "-m", "1024", "-M", "-t", "1"])
            self.procs.append(p)
            self.mc.append((p, host, port))
            if not wait_port(port, host=host):
                raise RuntimeError("memcached did not start")
        self.port = free_port()
        nodes = ",".join(f"{h}:{p}" for _, h, p in self.mc)
        cmd = [self.binary, "serve", "--listen", f"udp:127.0.0.1:{self.port}", "--listen", f"tcp:127.0.0.1:{self.port}",
               "--domain", DOMAIN, "--memcached", nodes, "--replicas", str(self.replicas), "--max-contacts", "1",
               "--log-level", "warn"]
        # All the load comes from one address (sipp and the uas on 127.0.0.1): sipfarm's
        # per-source datagram rate (limits.source_rate, 5000/s by default, like a pike that
        # Kamailio's config here has not) would drop the upper steps of the ladders.
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.cfg.write("[limits]\nsource_rate = 1000000\n")
        if not self.pipelined:
            self.cfg.write("[memcached]\npipeline = false\n")
        self.cfg.close()
        cmd += ["--config", self.cfg.name]
        if self.users:
            secret = os.path.join(self.users.work, "auth-secret")
            with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            cmd += ["--users", self.users.sipfarm_file, "--auth-secret-file", secret]
        self.sf = Proc(cmd)
        self.procs.append(self.sf)
        if not wait_port(self.port):
            raise RuntimeError("sipfarm did not start")

    def proxy_pids(self):
        return self.sf.pids()

    def stop(self):
        super().stop()
        if getattr(self, "cfg", None):
            os.unlink(self.cfg.name)

    def store_pids(self):
        return [p.pid for p, _, _ in self.mc]


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


def start_postgres(tmp, procs):
    """A PostgreSQL cluster of its own in tmp (initdb'd there, loopback only, trust auth),
    with a database and owner kamailio; returns (Proc, port, Kamailio's db URL)."""
    os.chmod(tmp, 0o777)
    pgbin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
    pgbin = f"/usr/lib/postgresql/{pgbin}/bin"
    data = os.path.join(tmp, "pg")
    subprocess.run(["runuser", "-u", "postgres", "--", f"{pgbin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    pg = Proc(["runuser", "-u", "postgres", "--", f"{pgbin}/postgres", "-D", data, "-p", str(port),
               "-k", tmp, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
    procs.append(pg)
    if not wait_port(port):
        raise RuntimeError("postgres did not start")
    psql = ["psql", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    subprocess.run(psql + ["-c", "CREATE USER kamailio PASSWORD 'kamailio'"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(psql + ["-c", "CREATE DATABASE kamailio OWNER kamailio"], check=True, stdout=subprocess.DEVNULL)
    return pg, port, f"postgres://kamailio:kamailio@127.0.0.1:{port}/kamailio"


def psql_files(port, files):
    """Run SQL scripts as kamailio in its database; stops at the first error."""
    for f in files:
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "kamailio",
                        "-d", "kamailio", "-f", f], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PGPASSWORD="kamailio"))


class KamailioPg(Kamailio):
    """Kamailio with usrloc db_mode=3 on a PostgreSQL cluster of its own."""

    def __init__(self):
        super().__init__(name="kamailio+pg")

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-kampg-")
        self.pg, self.pgport, url = start_postgres(self.tmp, self.procs)
        psql_files(self.pgport, [f"/usr/share/kamailio/postgres/{f}" for f in ["standard-create.sql", "usrloc-create.sql"]])
        self.port = free_port()
        self.k = self.kam(self.port, defines=["WITH_PG", f'DBURL="{url}"'])

    def store_pids(self):
        return self.pg.pids()


class KamailioAuth(Kamailio):
    """Kamailio WITH_AUTH: usrloc in memory, auth_db reading the subscriber table (stored
    HA1s of the same users as sipfarm's users file) from a PostgreSQL cluster of its own,
    whose CPU is the store's. Named "kamailio" so that the report sets it beside sipfarm."""

    def __init__(self, users):
        super().__init__(name="kamailio")
        self.users = users

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="bench-kamauth-")
        self.pg, self.pgport, url = start_postgres(self.tmp, self.procs)
        psql_files(self.pgport, [f"/usr/share/kamailio/postgres/{f}" for f in ["standard-create.sql", "auth_db-create.sql"]]
                   + [self.users.subscriber_sql])
        # Fresh statistics for the planner after the bulk load (index scans, as in production).
        subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-p", str(self.pgport), "-U", "kamailio", "-d", "kamailio",
                        "-c", "ANALYZE subscriber"], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PGPASSWORD="kamailio"))
        self.port = free_port()
        self.k = self.kam(self.port, defines=["WITH_AUTH", f'DBURL="{url}"'])

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


def memcached_bytes(system):
    total = 0
    for _, host, port in system.mc:
        with socket.create_connection((host, port), timeout=2) as c:
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
