#!/usr/bin/env bash
# Overhead of the default probe set on the -O2 test nginx, side by side in
# one run: attach latency (cold and warm page cache), ngxprobe's RSS while
# attached, and wrk throughput with and without the probes, alternating.
#   make bench            (or: RUNS=5 DURATION=5 bash bench/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
NGXPROBE=${NGXPROBE:-bin/ngxprobe}
prefix=$(bash internal/nginxtest/build-nginx.sh o2 | tail -n1)
nginx="$prefix/sbin/nginx"
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
uport=$((port + 1))
cat >"$work/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/cb; proxy_temp_path $work/pt; fastcgi_temp_path $work/ft; uwsgi_temp_path $work/ut; scgi_temp_path $work/st;
  upstream backend { server 127.0.0.1:$uport; keepalive 16; }
  server { listen 127.0.0.1:$uport; location / { return 200 "upstream\n"; } }
  server {
    listen 127.0.0.1:$port;
    location /static { return 200 "ok\n"; }
    location /proxy { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://backend; }
  }
}
CONF
probe_pid=""
cleanup() {
  [ -n "$probe_pid" ] && kill -INT "$probe_pid" 2>/dev/null && wait "$probe_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT
"$nginx" -p "$work/" -c "$work/nginx.conf"
for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
master=$(cat "$work/nginx.pid")

echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r), nginx $($nginx -v 2>&1 | sed 's/.*\///')"
echo "# command: RUNS=$RUNS DURATION=$DURATION bash bench/run.sh"

# Attach latency: from command start to the "attached" line.
attach_ms() {
  local start end
  start=$(date +%s%N)
  "$NGXPROBE" run -p "$master" --duration 1ms 2>&1 >/dev/null | grep -m1 -q "attached"
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}
cold=(); warm=()
for _ in $(seq "$RUNS"); do
  sync; echo 3 >/proc/sys/vm/drop_caches
  cold+=("$(attach_ms)")
  warm+=("$(attach_ms)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "attach_ms_cold median $(median "${cold[@]}") runs ${cold[*]}"
echo "attach_ms_warm median $(median "${warm[@]}") runs ${warm[*]}"

rps() { wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$port/$1" | awk '/Requests\/sec/ {print int($2)}'; }
for path in static proxy; do
  base=(); probed=(); rss=()
  for _ in $(seq "$RUNS"); do
    base+=("$(rps "$path")")
    "$NGXPROBE" run -p "$master" >/dev/null 2>"$work/probe.err" &
    probe_pid=$!
    for _ in $(seq 100); do grep -q attached "$work/probe.err" 2>/dev/null && break; sleep 0.05; done
    probed+=("$(rps "$path")")
    rss+=("$(awk '/VmRSS/ {print $2}' "/proc/$probe_pid/status")")
    kill -INT "$probe_pid"; wait "$probe_pid" || true; probe_pid=""
  done
  b=$(median "${base[@]}"); p=$(median "${probed[@]}")
  echo "wrk_$path baseline_rps median $b runs ${base[*]}"
  echo "wrk_$path default_set_rps median $p runs ${probed[*]}"
  echo "wrk_$path retention $(awk -v p="$p" -v b="$b" 'BEGIN {printf "%.3f", p/b}')"
  echo "ngxprobe_rss_kib_while_attached ($path) median $(median "${rss[@]}") runs ${rss[*]}"
done
