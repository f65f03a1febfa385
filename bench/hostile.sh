#!/usr/bin/env bash
# Hostile HTTP/2 against nginx, HAProxy, Caddy 2.11 and snirouter (`just hostile-h2`).
#
# Each proxy runs as in `just bench` (bench/run.sh: same PKI, configs and nginx backend)
# and gets the attacks of tests/hostile/h2attack.py in turn. Per attack and proxy the
# report gives the memory growth (peak RSS of the process tree during the attack over its
# RSS before; the peak is restarted per attack through /proc/PID/clear_refs), the
# connections the backend accepted, the bytes the proxy logged, and what the attacker
# saw (GOAWAY codes, closed connections). During the paced Rapid Reset an ordinary
# client asks the same backend every 250 ms; its failures and slowest answer are shown.
# Writes markdown to stdout and bench/results/hostile.md.
#
# Environment: BENCH_PROXIES (default "nginx haproxy caddy snirouter"), BENCH_SKIP_BUILD,
# BENCH_SNIROUTER_BIN/BENCH_SIM_BIN (as in bench/run.sh), HOSTILE_OUT (report path).
set -euo pipefail
# shellcheck source=bench/run.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh"

ATTACK=$REPO/tests/hostile/h2attack.py
HOSTILE_OUT=${HOSTILE_OUT:-$BENCH_DIR/results/hostile.md}
declare -A H=()      # H[attack.proxy.column]=value

install_hostile_tools() {
    python3 -c 'import h2' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check h2==4.3.0
}

backend_accepts() {  # connections the backend nginx has accepted since it started
    curl -fsS "http://127.0.0.1:$BACKEND_PORT/nginx_status" | awk 'NR == 3 {print $1}'
}

log_bytes() {        # what the running proxy has logged so far
    local f
    case $1 in
        nginx) f=$TMP/nginx/error.log ;;
        haproxy) f=$TMP/haproxy/stderr.log ;;
        caddy) f=$TMP/caddy/stderr.log ;;
        snirouter) f=$TMP/snirouter/stderr.log ;;
    esac
    stat -c %s "$f" 2>/dev/null || echo 0
}

probe_loop() {       # probe_loop PORT SECONDS OUT: one GET every 250 ms; "status seconds" lines
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        curl -sS --max-time 10 --cacert "$CACERT" --resolve "$NAME:$1:127.0.0.1" -o /dev/null \
            -w '%{http_code} %{time_total}\n' "https://$NAME:$1/1k" >> "$3" 2>/dev/null || echo "000 10" >> "$3"
        sleep 0.25
    done
}

reset_peak() {       # restart VmHWM at the current RSS for the whole process tree
    local pid
    for pid in $(tree_pids "$ROOTPID"); do echo 5 > "/proc/$pid/clear_refs" 2>/dev/null || true; done
}

attack() {           # attack PROXY NAME ARGS...: runs one attack, records its row
    local p=$1 name=$2 port=${PORT[$1]} rss0 accepts0 log0 out probes=$TMP/probes.$1.$2
    shift 2
    reset_peak
    rss0=$(mem_kib VmRSS)
    accepts0=$(backend_accepts)
    log0=$(log_bytes "$p")
    : > "$probes"
    local prober=""
    if [[ $name == paced-reset ]]; then
        probe_loop "$port" 10 "$probes" &
        prober=$!
    fi
    out=$(python3 "$ATTACK" "127.0.0.1:$port" "$NAME" "$CACERT" "$name" "$@" 2>"$TMP/attack.err") \
        || { cat "$TMP/attack.err" >&2; die "$name against $p failed"; }
    [[ -z $prober ]] || wait "$prober"
    H[$name.$p.mem]=$(( ($(mem_kib VmHWM) - rss0) / 1024 ))
    H[$name.$p.upstream]=$(( $(backend_accepts) - accepts0 ))
    H[$name.$p.log]=$(( $(log_bytes "$p") - log0 ))
    H[$name.$p.seen]=$(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
parts = [f"{k}: {v}" for k, v in r.items() if k in ("goaway", "closed_by_server", "streams", "last_close_s", "error")]
print("; ".join(parts).replace("|", "/"))' "$out")
    if [[ -s $probes ]]; then
        H[$name.$p.probes]=$(awk '$1 != 200 {bad++} $2 > max {max = $2} END {printf "%d of %d failed, slowest %.2f s", bad, NR, max}' "$probes")
    fi
    log "$p $name: ${H[$name.$p.mem]} MiB, ${H[$name.$p.upstream]} upstream connections, ${H[$name.$p.log]} B of log"
    wait_ready "$port" || die "$p stopped serving after $name"
}

ATTACKS=(
    "slow-reader --conns 8 --streams 200 --path /big --seconds 8"
    "slow-reader-h1 --conns 500 --path /big --seconds 6"
    "rapid-reset --seconds 5 --path /1k"
    "paced-reset --conns 2 --seconds 10 --path /1k"
    "made-you-reset --seconds 5 --path /1k"
    "continuation-flood --seconds 5"
    "hpack-bomb --seconds 5"
    "settings-flood --seconds 5"
    "ping-flood --seconds 5"
    "slow-hellos --conns 500 --seconds 12"
)

hostile_report() {
    local a name p
    echo "# Hostile HTTP/2: nginx, HAProxy, Caddy and snirouter"
    echo
    echo "Run $(date -u +%F) on $(nproc) cores; snirouter $SNIROUTER_REV; $(nginx -v 2>&1 | cut -d' ' -f3);" \
        "HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'); Caddy $(caddy version | cut -d' ' -f1)."
    echo "Memory: peak RSS of the process tree minus its RSS before the attack. Upstream: connections the backend"
    echo "accepted during the attack. Log: bytes the proxy wrote to its log (default log levels)."
    for a in "${ATTACKS[@]}"; do
        name=${a%% *}
        echo
        echo "## $name (\`h2attack.py … $a\`)"
        echo
        echo "| proxy | memory (MiB) | upstream connections | log (bytes) | the attacker saw | ordinary client |"
        echo "| --- | ---: | ---: | ---: | --- | --- |"
        for p in $PROXIES; do
            echo "| $p | ${H[$name.$p.mem]:-–} | ${H[$name.$p.upstream]:-–} | ${H[$name.$p.log]:-–} | ${H[$name.$p.seen]:-–} | ${H[$name.$p.probes]:-–} |"
        done
    done
}

hostile_main() {
    install_tools
    install_caddy
    install_hostile_tools
    build_snirouter
    make_pki
    port_busy "$BACKEND_PORT" && die "port $BACKEND_PORT already in use"
    start_backend
    head -c $((100 * 1024 * 1024)) /dev/zero > "$TMP/backend/www/big"
    local p a
    for p in $PROXIES; do
        "start_$p" || die "$p did not start"
        wait_ready "${PORT[$p]}" || die "$p is not serving"
        for a in "${ATTACKS[@]}"; do
            # shellcheck disable=SC2086 # the attack's arguments are words
            attack "$p" $a
        done
        stop_proxy "$p"
    done
    mkdir -p "$(dirname "$HOSTILE_OUT")"
    hostile_report | tee "$HOSTILE_OUT"
    log "report written to $HOSTILE_OUT"
}

hostile_main "$@"
