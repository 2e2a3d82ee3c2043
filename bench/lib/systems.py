"""The systems under test: sipfarm (memcached farm) and Kamailio (in memory, on PostgreSQL,
two nodes with dmq_usrloc), each started and stopped with the processes it needs."""

import os
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
