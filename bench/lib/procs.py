"""Processes of the bench: free loopback ports, the one class that starts and stops a
process by its pid, and the CPU time of processes from /proc."""

import os
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port(host="127.0.0.1"):
    while True:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()


def wait_port(port, timeout=15.0, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
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
    """A process this script started. stop() ends it by its pid: SIGTERM, at most GRACE
    seconds to exit, then SIGKILL, and always wait() (no zombie). Every process the bench
    starts and stops goes through this class."""

    GRACE = 10

    def __init__(self, cmd, cwd=None, env=None, user=None, quiet=True, stderr=None):
        """quiet: stdout and stderr to /dev/null; stderr: a file object for stderr instead."""
        self.cmd = cmd
        out = subprocess.DEVNULL if quiet else None
        preexec = None
        if user:
            import pwd

            pw = pwd.getpwnam(user)

            def preexec():
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=stderr or out, stdin=subprocess.DEVNULL,
                                  preexec_fn=preexec)
        self.pid = self.p.pid

    @property
    def returncode(self):
        return self.p.returncode

    def pids(self):
        return descendants(self.pid)

    def wait(self, timeout):
        """Wait at most timeout seconds for it to exit on its own: its exit code, or None."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        # Popen signals by pid only while the child is not reaped, so the pid is always ours.
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            if self.wait(self.GRACE) is None:
                self.p.kill()
                self.p.wait()
        return self.p.returncode
