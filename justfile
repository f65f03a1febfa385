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

# Profile the router (no tests involved): a simulated tailscaled, an nginx backend, the
# release router, then DURATION seconds of LOAD — `keepalive` (wrk, 64 connections) or `h2`
# (h2load, 32 connections x 16 streams) — four times: the on-CPU top symbols, per-request
# CPU / context switches / migrations / page faults, the off-CPU stacks and the system calls
# per request (bench/profile.sh). Installs perf, nginx, wrk and h2load from apt when missing.
# Example: just profile 10 h2
profile duration="10" load="keepalive":
    bash bench/profile.sh {{duration}} {{load}}
