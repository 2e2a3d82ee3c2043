#!/usr/bin/env python3
"""Users with passwords for the authenticated scenarios, written three ways from one list so
that sipfarm and Kamailio know exactly the same users:

- the sipp injection file (bench/sipp/register_auth.xml, uac_auth.xml): `USER;PASSWORD;CALLEE`
  (field0 the user and digest username, field1 its password, field2 the user it calls);
- sipfarm's users file (`--users`): `USER@DOMAIN md5:HEX sha256:HEX`, HEX = HA1 =
  H(user:realm:password) with the realm = the lowercased domain (RFC 7616 3.4.2);
- Kamailio's subscriber rows (auth_db, calculate_ha1=0): an SQL script of one COPY into
  `subscriber (username, domain, ha1, ha1b)`, ha1 = MD5 HA1 as above, ha1b = the same with
  `user@domain` as the username (for phones that send it so); the password column stays empty:
  both systems hold HA1s only.

Every line calls the same callee (the first user) by default: sipp 3.6.1 puts
`uri="sip:" + -auth_uri` (or the server's ip:port) in its credentials, one value per run, so
only a single callee lets the digest uri equal the INVITE's Request-URI as RFC 3261 22.4
expects (`--calls-each-next` makes line i call user i+1 instead).

    python3 bench/lib/authusers.py --users 1000 --domain example.test OUTDIR
writes OUTDIR/users_auth.csv, OUTDIR/users.sipfarm and OUTDIR/subscriber.sql.
"""

import argparse
import hashlib
import os
import secrets


def make_users(n, prefix="a"):
    """n (user, password) pairs; passwords random, CSV-safe (hex)."""
    return [(f"{prefix}{i:07d}", secrets.token_hex(8)) for i in range(n)]


def ha1(alg, user, realm, password):
    return hashlib.new(alg, f"{user}:{realm}:{password}".encode()).hexdigest()


def write_inject(path, users, each_next=False):
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i, (user, password) in enumerate(users):
            callee = users[(i + 1) % len(users)][0] if each_next else users[0][0]
            f.write(f"{user};{password};{callee}\n")


def write_sipfarm_users(path, users, domain, append=False):
    realm = domain.lower()
    with open(path, "a" if append else "w") as f:
        for user, password in users:
            f.write(f"{user}@{realm} md5:{ha1('md5', user, realm, password)} "
                    f"sha256:{ha1('sha256', user, realm, password)}\n")
    os.chmod(path, 0o600)  # password equivalents


def write_subscriber_sql(path, users, domain, append=False):
    realm = domain.lower()
    with open(path, "a" if append else "w") as f:
        f.write("COPY subscriber (username, domain, ha1, ha1b) FROM stdin;\n")
        for user, password in users:
            f.write(f"{user}\t{realm}\t{ha1('md5', user, realm, password)}\t"
                    f"{ha1('md5', f'{user}@{realm}', realm, password)}\n")
        f.write("\\.\n")


class AuthUsers:
    """Every user set of a bench run (one per scenario and transport, as for the plain
    scenarios), accumulated into one sipfarm users file and one subscriber script, which
    the systems load at start."""

    def __init__(self, work, domain):
        self.work, self.domain = work, domain
        self.sipfarm_file = os.path.join(work, "users.sipfarm")
        self.subscriber_sql = os.path.join(work, "subscriber.sql")
        self.csvs = {}
        for p in (self.sipfarm_file, self.subscriber_sql):
            open(p, "w").close()

    def add(self, name, n, prefix):
        users = make_users(n, prefix)
        self.csvs[name] = os.path.join(self.work, f"{name}.csv")
        write_inject(self.csvs[name], users)
        write_sipfarm_users(self.sipfarm_file, users, self.domain, append=True)
        write_subscriber_sql(self.subscriber_sql, users, self.domain, append=True)
        return self.csvs[name], users[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--domain", default="example.test")
    ap.add_argument("--prefix", default="user")
    ap.add_argument("--calls-each-next", action="store_true")
    ap.add_argument("out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    users = make_users(args.users, args.prefix)
    write_inject(os.path.join(args.out, "users_auth.csv"), users, args.calls_each_next)
    write_sipfarm_users(os.path.join(args.out, "users.sipfarm"), users, args.domain)
    write_subscriber_sql(os.path.join(args.out, "subscriber.sql"), users, args.domain)


if __name__ == "__main__":
    main()
