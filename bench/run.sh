#!/usr/bin/env bash
# Overhead of the default probe set on the -O2 test nginx, side by side in
# one run: attach latency (cold and warm page cache), ngxprobe's RSS while
# attached, and wrk throughput with and without the probes, alternating.
#   make bench            (or: RUNS=5 DURATION=5 bash bench/run.sh)
#   SKIP_WRK=1 skips the throughput part.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
NGXPROBE=${NGXPROBE:-bin/ngxprobe}
source bench/perfprobe.sh
trap 'bench_stop; perf_teardown' EXIT
source bench/nginx.sh
echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r), nginx $($nginx -v 2>&1 | sed 's/.*\///')"
echo "# command: RUNS=$RUNS DURATION=$DURATION bash bench/run.sh"

# Attach latency: from command start to the line saying the probes are
# attached (ngxprobe's "attached" summary; a bpftrace BEGIN probe, which
# fires once all probes are attached). Cold runs drop the page cache first.
lto=$(bash internal/nginxtest/build-nginx.sh lto | tail -n1)/sbin/nginx
bash bench/bpftrace-default.sh "$nginx" >"$work/attach.bt"
echo 'BEGIN { printf("attached\n"); exit(); }' >>"$work/attach.bt"
timed() {
  local start end p
  start=$(date +%s%N)
  "$@" >"$work/attach.out" 2>&1 &
  p=$!
  for _ in $(seq 2000); do grep -q attached "$work/attach.out" && break; sleep 0.005; done
  end=$(date +%s%N)
  wait "$p" || true
  echo $(((end - start) / 1000000))
}
# The default set's points and fields, as perf probe events (DWARF args).
# perf probe 1.x cannot place DWARF 5 bitfields ("Failed to get the offset
# of eof"): it reads the flag bytes by offset, as the bpftrace script does.
source bench/offsets.sh
nginx_offsets "$nginx"
perf_add_all() {
  export PERF_BINARY=$nginx
  local c="+$off_conn(%di)"
  perf_delete
  perf_setup "ngxpbench:fin=ngx_http_finalize_request rc status=r->headers_out.status conn=r->connection->number rflags=+$off_evflags(+$off_read($c)):u8 wflags=+$off_evflags(+$off_write($c)):u8 cflags=+$off_cflags($c):u8" &&
    perf_setup 'ngxpbench:recv=ngx_unix_recv conn=c->number size' &&
    perf_setup 'ngxpbench:recvret=ngx_unix_recv%return ret=$retval'
}
declare -A cold warm
tools=(ngxprobe_o2 ngxprobe_lto)
command -v bpftrace >/dev/null && tools+=(bpftrace_o2)
command -v perf >/dev/null && tools+=(perf_probe_o2)
attach_cmd() {
  case "$1" in
    ngxprobe_o2) "$NGXPROBE" run --binary "$nginx" --duration 1ms ;;
    ngxprobe_lto) "$NGXPROBE" run --binary "$lto" --duration 1ms ;;
    bpftrace_o2) bpftrace "$work/attach.bt" ;;
    # perf probe's DWARF work, then a recording session that starts and stops.
    perf_probe_o2) perf_add_all && perf record -q -e 'ngxpbench:*' -a -o /dev/null -- true && echo attached ;;
  esac
}
for _ in $(seq "$RUNS"); do
  for t in "${tools[@]}"; do
    sync; echo 3 >/proc/sys/vm/drop_caches
    cold[$t]="${cold[$t]:-} $(timed attach_cmd "$t")"
    warm[$t]="${warm[$t]:-} $(timed attach_cmd "$t")"
  done
done
for t in "${tools[@]}"; do
  echo "attach_ms $t cold median $(median ${cold[$t]}) warm median $(median ${warm[$t]}) (cold runs${cold[$t]}; warm runs${warm[$t]})"
done

[ -n "${SKIP_WRK:-}" ] && exit 0
bash bench/bpftrace-default.sh "$nginx" >"$work/default.bt"
# variant -> attach command; each prints "attach" on stderr once attached
attach() {
  case "$1" in
    ngxprobe_default) "$NGXPROBE" run -p "$master" >/dev/null ;;
    ngxprobe_default_close_stacks) "$NGXPROBE" run -p "$master" --stack >/dev/null ;;
    bpftrace_same_points) bpftrace "$work/default.bt" >/dev/null ;;
    perf_probe_same_points) perf_record "$work/perf.data" ;;
  esac
}
variants=(baseline ngxprobe_default ngxprobe_default_close_stacks)
command -v bpftrace >/dev/null && variants+=(bpftrace_same_points)
if command -v perf >/dev/null; then
  perf_add_all
  variants+=(perf_probe_same_points)
fi
# Wait for any line with "attach": ngxprobe's and perf_record's "attached",
# bpftrace's "Attaching N probes".
ready_line() { echo attach; }
declare -A rss=()
while_attached() {
  [ "$1" = ngxprobe_default ] || return 0
  rss[$3]="${rss[$3]:-} $(awk '/VmRSS/ {print $2}' "/proc/$(pgrep -P "$2" | head -1)/status")"
}
after_detach() { if [ "$1" = perf_probe_same_points ]; then perf_stop && perf_add_all; fi; }
bench_wrk "${variants[@]}"
for path in static proxy; do
  echo "ngxprobe_rss_kib_while_attached ($path, default set) median $(median ${rss[$path]}) runs${rss[$path]}"
done
