#!/usr/bin/env bash
# Benchmarks: sipfarm (memcached farm, R=2) side by side with Kamailio, same machine, same run.
#   bench/run.sh            full side-by-side run; the table goes to bench/RESULTS.md too
#   bench/run.sh --smoke    sipfarm alone, a few seconds per scenario (CI runs this)
#   bench/run.sh --help     every option (systems, scenarios, ladders, repeats, durations)
#   bench/run.sh --systems sipfarm,kamailio --scenarios register_auth,call_auth --out auth.md
#                           digest authentication: sipfarm --users against Kamailio WITH_AUTH
#                           (auth_db on PostgreSQL), the same users (--out: else the table
#                           replaces bench/RESULTS.md); --smoke adds a short register_auth
#                           for sipfarm when its build has --users
# Installs what it needs when missing (sip-tester, memcached; for the full run also kamailio,
# kamailio-postgres-modules, postgresql) and builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
for a in "$@"; do
    [ "$a" = "--smoke" ] && smoke=1
    [ "$a" = "--help" ] && exec python3 bench/bench.py --help
done

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "$smoke" = 0 ]; then
    command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
    [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/db_postgres.so ] || ls /usr/lib/*/kamailio/modules/db_postgres.so >/dev/null 2>&1 || need+=(kamailio-postgres-modules)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
if [ "$smoke" = 1 ]; then
    exec python3 bench/bench.py "$@"
fi
exec python3 bench/bench.py --out bench/RESULTS.md "$@"
