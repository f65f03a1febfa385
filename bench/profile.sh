#!/usr/bin/env bash
# `just profile [DURATION] [LOAD]`: the release router behind a loopback nginx backend, then
# four looks at DURATION seconds of LOAD each — `keepalive` (wrk, 64 connections) or `h2`
# (h2load, 32 connections x 16 streams): the on-CPU profile (perf), per-request CPU, context
# switches, migrations and page faults (perf stat), the off-CPU stacks (sched_switch), and
# system calls per request (strace -c). With 2+ cores the router runs on core 1, the load and
# the backend on core 0. Installs perf (linux-perf), nginx, wrk and h2load when missing.
D=${1:-10}
LOAD=${2:-keepalive}
[[ $D =~ ^[0-9]+$ && $D -ge 1 ]] || { echo "DURATION must be a positive integer" >&2; exit 2; }
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "$LOAD" in keepalive|h2) ;; *) echo "load must be keepalive or h2" >&2; exit 2;; esac
for t in perf nginx wrk h2load; do command -v $t >/dev/null || { apt-get update -qq; apt-get install -y -qq linux-perf nginx wrk nghttp2-client; break; }; done
cargo build --release -p snirouter --bin snirouter -p snirouter-testkit --bin snirouter-sim-tailscaled
dir=$(mktemp -d); chmod 755 "$dir"; pids=()  # nginx workers (www-data) read files from it
trap 'kill ${pids[@]} 2>/dev/null; nginx -s stop -c "$dir/nginx.conf" 2>/dev/null; sed -i "/# snirouter-profile/d" /etc/hosts; rm -rf "$dir"' EXIT
head -c 1024 /dev/urandom > "$dir/1k"
printf 'worker_processes 1; pid %s/nginx.pid; error_log %s/error.log;\nevents { worker_connections 4096; }\nhttp { access_log off; server { listen 127.0.0.1:18690; root %s; keepalive_requests 1000000; } }\n' "$dir" "$dir" "$dir" > "$dir/nginx.conf"
nginx -c "$dir/nginx.conf"
./target/release/snirouter-sim-tailscaled --socket "$dir/ts.sock" --suffix tailnet.ts.net --service bench --write-ca "$dir/ca.pem" & pids+=($!)
sleep 1
printf '[tailscale]\nsocket = "%s/ts.sock"\n[listen]\nhttps = ["127.0.0.1:18691"]\n[cache]\ndir = "%s/cache"\n[admin]\nsocket = "%s/admin.sock"\n[services.bench]\nupstream = "http://127.0.0.1:18690"\n' "$dir" "$dir" "$dir" > "$dir/sr.toml"
./target/release/snirouter run --config "$dir/sr.toml" 2> "$dir/sr.log" & pids+=($!)
echo "127.0.0.1 bench.tailnet.ts.net # snirouter-profile" >> /etc/hosts
for _ in $(seq 50); do curl -sf --cacert "$dir/ca.pem" https://bench.tailnet.ts.net:18691/1k -o /dev/null && break; sleep 0.2; done
# With 2+ cores the router gets core 1 and the load core 0: quieter numbers (docs/benchmarks.md §3).
on_load=()
if [ "$(nproc)" -ge 2 ]; then
    taskset -a -pc 1 "${pids[1]}" >/dev/null
    for p in $(cat "$dir/nginx.pid") $(pgrep -P "$(cat "$dir/nginx.pid")"); do taskset -pc 0 "$p" >/dev/null; done
    on_load=(taskset -c 0)
fi
router=${pids[1]}
# load SECONDS: the chosen load for SECONDS; prints the requests it completed.
load() {
    if [ "$LOAD" = h2 ]; then
        "${on_load[@]}" h2load -t 2 -c 32 -m 16 -D "$1" https://bench.tailnet.ts.net:18691/1k > "$dir/load.txt" 2>&1 || true
        awk '/^requests:/ {print $8}' "$dir/load.txt"
    else
        "${on_load[@]}" wrk -t2 -c64 -d"$1"s https://bench.tailnet.ts.net:18691/1k > "$dir/load.txt" 2>&1 || true
        awk '/requests in/ {print $1}' "$dir/load.txt"
    fi
}
per() { awk -v a="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.3f", a / n; else print "-" }'; }
# 1. On-CPU: where the router's CPU time goes.
perf record -F 999 -g -p "$router" -o "$dir/perf.data" -- sleep $D > /dev/null 2>&1 &
perf_pid=$!
n=$(load $D); wait "$perf_pid" || true
echo "== on-CPU profile ($LOAD, $n requests in $D s)"
perf report -i "$dir/perf.data" --no-children --sort symbol --stdio 2>/dev/null > "$dir/report.txt" || true
grep -E '^ +[0-9]' "$dir/report.txt" | sed -e 's/ \{2,\}-  *-  *$//' | cut -c1-110 | head -30 || true
# 2. Per request: CPU, context switches (voluntary = wake-ups after waiting), migrations, page faults.
perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -p "$router" -o "$dir/stat.txt" -- sleep $D &
stat_pid=$!
n=$(load $D); wait "$stat_pid" || true
echo "== per request ($LOAD, $n requests)"
awk -F, -v n="$n" '$3 ~ /task-clock/ { printf "  cpu µs/request         %.2f\n", $1 * 1000 / n }
    $3 ~ /^(context-switches|cpu-migrations|page-faults)$/ { printf "  %-22s %.3f\n", $3 "/request", $1 / n }' "$dir/stat.txt"
# 3. Off-CPU: where the router's threads go to sleep (each switch away, with its stack).
perf record -e sched:sched_switch -g -p "$router" -o "$dir/off.data" -- sleep $D > /dev/null 2>&1 &
off_pid=$!
n=$(load $D); wait "$off_pid" || true
echo "== off-CPU: switches away per request by stack ($LOAD, $n requests)"
perf report -i "$dir/off.data" --no-children --sort symbol --stdio -g caller,0.5,callee --percent-limit 5 2>/dev/null \
    | grep -E '^ +[0-9]|--[0-9.]+%--' | head -24 || true
# 4. System calls per request (strace slows the router; the counts per request hold).
timeout $(( $D + 5 )) strace -c -f -p "$router" -o "$dir/strace.txt" &
strace_pid=$!
sleep 1
n=$(load $D); kill -INT "$strace_pid" 2>/dev/null || true; wait "$strace_pid" 2>/dev/null || true
echo "== system calls per request ($LOAD under strace, $n requests)"
awk -v n="$n" 'NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" { printf "  %-16s %.3f\n", $NF, $4 / n }' "$dir/strace.txt" \
    | sort -k2 -g -r | head -12
