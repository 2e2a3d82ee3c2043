#!/usr/bin/env python3
"""Which challenge does sipp's [authentication] answer when a 401 carries several?

sipfarm offers two challenges per 401/407 (RFC 8760: SHA-256 first, MD5 second), and sipp
3.6.1 computes only MD5. This probe is a fake registrar on 127.0.0.1 (UDP) that answers the
first REGISTER of bench/sipp/register_auth.xml with a 401 laid out in one of several ways,
then checks the second REGISTER's Authorization: which nonce it answers, with which
algorithm, and whether the MD5 response is right. It prints one line per layout. Every
sipp run is one call, bounded by -timeout; nothing leaves loopback.

    python3 bench/lib/sipp_auth_probe.py
"""

import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib.procs import free_port  # noqa: E402

SIPP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sipp")
DOMAIN = "example.test"
USER, PASSWORD = "alice", "s3cret"


def challenge(alg, nonce, qop=True):
    return f'Digest realm="{DOMAIN}", nonce="{nonce}", algorithm={alg}' + (', qop="auth"' if qop else "")


SHA = challenge("SHA-256", "nonceSHA256")
MD5 = challenge("MD5", "nonceMD5")
LAYOUTS = {
    "two headers, SHA-256 first then MD5": [SHA, MD5],
    "two headers, MD5 first then SHA-256": [MD5, SHA],
    "one header line, SHA-256 then MD5 comma-joined": [SHA + ", " + MD5],
    # Shows whether sipp reads the headers one by one or as one joined string.
    "two headers, MD5 without qop first, then SHA-256 with qop": [challenge("MD5", "nonceMD5", qop=False), SHA],
    "MD5 alone": [MD5],
    "SHA-256 alone": [SHA],
}


def h(alg, text):
    return hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[alg], text.encode()).hexdigest()


def params(value):
    return {k.lower(): (v1 if v1 else v2) for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


def verdict(auth):
    """What the Authorization header answers: nonce, algorithm, right response or not."""
    p = params(auth)
    alg = p.get("algorithm", "MD5 (absent)")
    ok = []
    for a in ("MD5", "SHA-256"):
        ha1 = h(a, f"{USER}:{DOMAIN}:{PASSWORD}")
        ha2 = h(a, f"REGISTER:{p.get('uri', '')}")
        if p.get("qop"):
            want = h(a, f"{ha1}:{p.get('nonce')}:{p.get('nc')}:{p.get('cnonce')}:{p.get('qop')}:{ha2}")
        else:
            want = h(a, f"{ha1}:{p.get('nonce')}:{ha2}")
        if want == p.get("response"):
            ok.append(a)
    right = f"response right for {'/'.join(ok)}" if ok else "response matches neither MD5 nor SHA-256"
    return (f"answered nonce={p.get('nonce')} algorithm={alg} qop={p.get('qop')} nc={p.get('nc')} "
            f"uri={p.get('uri')}, {right}")


def serve(sock, headers, seen, stop):
    """Answer REGISTERs: 401 with `headers` when there is no Authorization, else 200."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(65535)
        except socket.timeout:
            continue
        msg = data.decode(errors="replace")
        if not msg.startswith("REGISTER"):
            continue
        head = msg.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [l for l in head[1:] if l.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        auth = [l.split(":", 1)[1].strip() for l in head[1:] if l.lower().startswith("authorization:")]
        if auth:
            seen.append(auth)
            lines = ["SIP/2.0 200 OK"] + keep
        else:
            lines = ["SIP/2.0 401 Unauthorized"] + keep + [f"WWW-Authenticate: {c}" for c in headers]
        sock.sendto(("\r\n".join(lines + ["Content-Length: 0", "", ""])).encode(), peer)


def probe(headers, work):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    seen, stop = [], threading.Event()
    t = threading.Thread(target=serve, args=(sock, headers, seen, stop))
    t.start()
    csv = os.path.join(work, "users.csv")
    with open(csv, "w") as f:
        f.write(f"SEQUENTIAL\n{USER};{PASSWORD};{USER}\n")
    try:
        r = subprocess.run(["sipp", f"127.0.0.1:{port}", "-sf", os.path.join(SIPP_DIR, "register_auth.xml"),
                            "-inf", csv, "-m", "1", "-key", "domain", DOMAIN, "-key", "contact_host", "127.0.0.1",
                            "-key", "contact_port", "5999", "-key", "contact_transport", "udp",
                            "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin", "-timeout", "8s",
                            "-timeout_error", "-recv_timeout", "2000", "-trace_err"],
                           cwd=work, capture_output=True, text=True, timeout=30)
        errors = ""
        for f in os.listdir(work):
            if f.endswith("_errors.log"):
                with open(os.path.join(work, f)) as e:
                    errors += e.read()
                os.remove(os.path.join(work, f))
        lines = [l.strip() for l in (errors + r.stderr).splitlines() if l.strip() and not l.startswith("---")]
        return r.returncode, seen, lines
    finally:
        stop.set()
        t.join()
        sock.close()


def main():
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True)
    version = next((l.strip() for l in (out.stdout + out.stderr).splitlines() if "SIPp" in l), "sipp ?")
    print(version)
    with tempfile.TemporaryDirectory(prefix="sipp-auth-probe-") as work:
        for name, headers in LAYOUTS.items():
            rc, seen, errors = probe(headers, work)
            if seen:
                what = "; ".join(verdict(a) for a in seen[0])
                if len(seen[0]) > 1:
                    what = f"{len(seen[0])} Authorization headers: " + what
            else:
                what = "no authenticated REGISTER sent"
            print(f"- {name}: sipp exit {rc}; {what}")
            for e in errors[:3]:
                print(f"    sipp: {e[:300]}")


if __name__ == "__main__":
    main()
