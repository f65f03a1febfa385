# snirouter tasks. `just` is optional: every recipe is a plain command.

# Run the whole product locally (simulated tailscaled + 14 backends + router).
demo:
    cargo run --release -p snirouter -- demo

# The whole test suite (what CI runs).
test:
    cargo test --workspace

# Lints.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks against nginx, Caddy and HAProxy (installs them from apt if missing).
bench:
    bash bench/run.sh

# Hostile HTTP/2 (slow readers, Rapid Reset paced and not, floods, HPACK bomb, slow
# ClientHellos) against nginx, HAProxy, Caddy 2.11 and snirouter; see docs/reliability.md.
hostile-h2:
    bash bench/hostile.sh

# Validate a config file.
check config:
    cargo run -p snirouter -- check --config {{config}}

# Hold COUNT idle TLS connections against the demo router and report memory per
# connection and whether a fresh client is still served (see docs/reliability.md).
idle-flood count="10000":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p snirouter --bin snirouter --example idle_flood
    dir=$(mktemp -d)
    ulimit -n "$(ulimit -Hn)"
    ./target/release/snirouter demo --dir "$dir/demo" > "$dir/demo.out" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 100); do grep -q "router " "$dir/demo.out" 2>/dev/null && grep -q "demo:" "$dir/demo.out" && break; sleep 0.2; done
    addr=$(grep -o "https on [0-9.:]*" "$dir/demo.out" | cut -d' ' -f3)
    ./target/release/examples/idle_flood "$addr" grafana.demo-tailnet.ts.net "$dir/demo/demo-ca.pem" {{count}} "$pid"

# TLS posture scan of the demo router with testssl (Debian package testssl.sh).
testssl:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v testssl >/dev/null || { apt-get update -qq && apt-get install -y -qq testssl.sh; }
    cargo build --release -p snirouter --bin snirouter
    dir=$(mktemp -d)
    ./target/release/snirouter demo --dir "$dir/demo" > "$dir/demo.out" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null; rm -rf "$dir"; sed -i "/grafana.demo-tailnet.ts.net # snirouter-testssl/d" /etc/hosts' EXIT
    for _ in $(seq 100); do grep -q "demo:" "$dir/demo.out" 2>/dev/null && break; sleep 0.2; done
    addr=$(grep -o "https on [0-9.:]*" "$dir/demo.out" | cut -d' ' -f3)
    echo "127.0.0.1 grafana.demo-tailnet.ts.net # snirouter-testssl" >> /etc/hosts
    testssl --quiet --color 0 --warnings off --add-ca "$dir/demo/demo-ca.pem" -p -s -f -U -S -R "grafana.demo-tailnet.ts.net:${addr##*:}"

# Profile the router with perf (no tests involved): a simulated tailscaled, an nginx
# backend, the release router, then DURATION seconds of LOAD — `keepalive` (wrk, 64
# connections) or `h2` (h2load, 32 connections x 16 streams) — and the top symbols.
# Installs perf (linux-perf), nginx, wrk and h2load from apt when missing.
# Example: just profile 10 h2
profile duration="10" load="keepalive":
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{load}}" in keepalive|h2) ;; *) echo "load must be keepalive or h2" >&2; exit 2;; esac
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
    perf record -F 999 -g -p "${pids[1]}" -o "$dir/perf.data" -- sleep {{duration}} > /dev/null 2>&1 &
    perf_pid=$!
    if [ "{{load}}" = h2 ]; then
        "${on_load[@]}" h2load -t 2 -c 32 -m 16 -D {{duration}} https://bench.tailnet.ts.net:18691/1k | grep -E '^(finished|requests):'
    else
        "${on_load[@]}" wrk -t2 -c64 -d{{duration}}s https://bench.tailnet.ts.net:18691/1k
    fi
    wait "$perf_pid" || true
    perf report -i "$dir/perf.data" --no-children --sort symbol --stdio 2>/dev/null > "$dir/report.txt" || true
    grep -E '^ +[0-9]' "$dir/report.txt" | sed -e 's/ \{2,\}-  *-  *$//' | cut -c1-110 | head -30 || true
