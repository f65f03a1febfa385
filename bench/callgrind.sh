#!/usr/bin/env bash
# bench/callgrind.sh ROUTER_BIN SIM_BIN N OUT [KIND]
#
# Counts the router's user-space instructions (valgrind callgrind, deterministic) for N
# requests of one KIND through it, so two builds can be compared where wall-clock runs
# on a shared machine are too noisy (docs/benchmarks.md, "Issue 16"):
#   mb    N keep-alive GETs of 1 MiB        kb    N keep-alive GETs of 1 KiB
#   conn  N new TLS connections, 1 KiB each h2    N HTTP/2 GETs of 1 KiB on one connection
#   h2m   N HTTP/2 GETs of 1 KiB, multiplexed (h2load: 4 connections x 16 streams, the
#         shape of just bench's HTTP/2 run; adds an /etc/hosts line while it runs)
# Run it twice (e.g. N=10 and N=30) and divide the difference of the totals by the
# difference of N: start-up cancels out. Needs valgrind, nginx, curl, python3
# and, for h2m, h2load.
set -euo pipefail
BIN=$1 SIM=$2 N=$3 OUT=$4 KIND=${5:-mb}
T=$(mktemp -d /tmp/cgrun.XXXX)
mkdir -p $T/backend/www $T/cache
head -c $((1024*1024)) /dev/urandom > $T/backend/www/1m
head -c 1024 /dev/urandom > $T/backend/www/1k
BP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
sed -e "s#@TMP@#$T#g" -e "s#@BACKEND_PORT@#$BP#g" "$(dirname "$0")/configs/backend-nginx.conf" > $T/nginx.conf
nginx -p $T -e $T/backend/error.log -c $T/nginx.conf
$SIM --socket $T/ts.sock --suffix bench.ts.net --service bench --write-ca $T/ca.pem > $T/sim.log 2>&1 &
SIMPID=$!
for i in $(seq 100); do [[ -S $T/ts.sock && -s $T/ca.pem ]] && break; sleep 0.1; done
cat > $T/config.toml <<CFG
[tailscale]
socket = "$T/ts.sock"
[listen]
https = ["127.0.0.1:$RP"]
[cache]
dir = "$T/cache"
[admin]
socket = "$T/admin.sock"
[services.bench]
upstream = "http://127.0.0.1:$BP"
CFG
valgrind --tool=callgrind --callgrind-out-file=$OUT $BIN run --config $T/config.toml > $T/router.log 2>&1 &
RPID=$!
URL=https://bench.bench.ts.net:$RP
C="curl -s --cacert $T/ca.pem --resolve bench.bench.ts.net:$RP:127.0.0.1"
for i in $(seq 600); do $C -o /dev/null $URL/1k 2>/dev/null && break; sleep 0.2; done
if [[ $KIND == conn ]]; then
  for i in $(seq $N); do $C -o /dev/null $URL/1k; done
elif [[ $KIND == h2m ]]; then
  echo "127.0.0.1 bench.bench.ts.net # snirouter-callgrind" >> /etc/hosts
  SSL_CERT_FILE=$T/ca.pem h2load -t1 -c4 -m16 -n $N $URL/1k | grep -E '^requests:' >&2 || true
  sed -i '/# snirouter-callgrind/d' /etc/hosts
elif [[ $KIND == h2 ]]; then
  args=(); for i in $(seq $N); do args+=(-o /dev/null $URL/1k); done
  $C --http2 "${args[@]}"
elif [[ $KIND == mb ]]; then
  args=(); for i in $(seq $N); do args+=(-o /dev/null $URL/1m); done
  $C --http1.1 "${args[@]}"
else
  args=(); for i in $(seq $N); do args+=(-o /dev/null $URL/1k); done
  $C --http1.1 "${args[@]}"
fi
kill -TERM $RPID; wait $RPID || true
kill $SIMPID; kill $(cat $T/backend/nginx.pid) 2>/dev/null || true
rm -rf $T
grep -E "^(summary|totals):" $OUT | head -1
