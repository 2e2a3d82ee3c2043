#!/usr/bin/env bash
# Instructions per request under valgrind --tool=callgrind: a repeatable figure beside the
# noisy CPU times of bench/run.sh. Same sipp scenarios; sipfarm (2 memcached nodes, R=2,
# one thread) and Kamailio (in-memory usrloc; all its processes summed). Counters are zeroed
# after the users are registered, so each figure covers only the measured requests.
#   bench/callgrind.sh [REQUESTS]      (default 2000; takes a few minutes)
#   SIPFARM_BIN=path bench/callgrind.sh  measures another sipfarm binary (before/after a change)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

python3 - "$work/users.csv" "$n" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(int(sys.argv[2])):
        f.write(f"cg{i:07d}\n")
EOF

sipp_run() { # target scenario extra...
    local target=$1 scen=$2; shift 2
    sipp "127.0.0.1:$target" -sf "bench/sipp/$scen" -inf "$work/users.csv" -r 200 -m "$n" -t un \
        -i 127.0.0.1 -p "$(free_port)" -nostdin -max_socket 2000 -key domain example.test \
        -timeout 120s -timeout_error "$@" >/dev/null 2>&1
}

total_ir() { # sum of "summary:" or "totals:" lines of the dumps under $1
    python3 - "$@" <<'EOF'
import glob, sys
tot = 0
for f in glob.glob(sys.argv[1] + "*"):
    for line in open(f, errors="replace"):
        if line.startswith("summary:") or line.startswith("totals:"):
            tot += int(line.split()[1])
            break
print(tot)
EOF
}

measure() { # name port out-prefix
    local name=$1 port=$2 out=$3 uas_port=$4
    local keys=(-key contact_host 127.0.0.1 -key contact_port "$uas_port" -key contact_transport udp)
    sipp_run "$port" register.xml "${keys[@]}"          # create the bindings
    callgrind_control -z >/dev/null 2>&1 || true
    rm -f "$out".*
    sipp_run "$port" register.xml "${keys[@]}"          # refreshes
    callgrind_control -d reg >/dev/null 2>&1 || true
    sleep 1
    local reg; reg=$(total_ir "$out")
    callgrind_control -z >/dev/null 2>&1 || true
    sipp_run "$port" message.xml
    callgrind_control -d msg >/dev/null 2>&1 || true
    sleep 1
    local all; all=$(total_ir "$out")
    echo "| $name | $n | $((reg / n)) | $(((all - reg) / n)) |"
}

uas_port=$(free_port)
sipp -sf bench/sipp/message_uas.xml -t un -i 127.0.0.1 -p "$uas_port" -nostdin -max_socket 2000 >/dev/null 2>&1 &
pids+=($!)

# The memcached nodes on loopback addresses of their own: sipfarm refuses a Contact naming a
# node's address, and the uas is on 127.0.0.1.
m1=$(free_port); m2=$(free_port)
memcached -u root -l 127.0.0.2 -p "$m1" -m 256 -M -t 1 & pids+=($!)
memcached -u root -l 127.0.0.3 -p "$m2" -m 256 -M -t 1 & pids+=($!)
sp=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$work/sf.%p" "${SIPFARM_BIN:-target/release/sipfarm}" serve \
    --listen "udp:127.0.0.1:$sp" --listen "tcp:127.0.0.1:$sp" --domain example.test \
    --memcached "127.0.0.2:$m1,127.0.0.3:$m2" --replicas 2 --max-contacts 1 --threads 1 \
    --log-level error >/dev/null 2>&1 &
sfpid=$!; pids+=($sfpid)
wait_tcp "$sp"

kp=$(free_port)
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$work/kam.%p" \
    kamailio -DD -E -f bench/kamailio/kamailio.cfg -m 256 -M 16 -l "udp:127.0.0.1:$kp" -l "tcp:127.0.0.1:$kp" \
    -P "$work/kam.pid" -Y "$work" >/dev/null 2>&1 &
kampid=$!; pids+=($kampid)
wait_tcp "$kp"
sleep 3

echo "Instructions per request (valgrind --tool=callgrind, Ir), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
echo
echo "| system | requests | Ir per REGISTER (refresh) | Ir per MESSAGE |"
echo "|---|---:|---:|---:|"
# Zero and dump per system: callgrind_control acts on every callgrind process, so stop the
# other system's counting by measuring one at a time (the idle one adds almost nothing).
measure "sipfarm (memcached R=2; memcached's own work not included)" "$sp" "$work/sf" "$uas_port"
measure "kamailio (in-memory usrloc, all processes)" "$kp" "$work/kam" "$uas_port"
