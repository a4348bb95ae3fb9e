#!/usr/bin/env bash
# Cost of watching c->read->eof on the -O2 test nginx: wrk requests per
# second on loopback with keepalive, variants alternating in one run:
# baseline; exact-writer mode; diff mode on ngx_unix_recv's entry and
# return; bpftrace with a uprobe and a uretprobe on ngx_unix_recv reading
# the same field. ngxprobe variants start once their stacks are ready:
# the one-off indexing of nginx's and libc's debug info is an attach cost.
#   RUNS=5 DURATION=5 bash bench/watch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
NGXPROBE=${NGXPROBE:-bin/ngxprobe}
go build -o "$NGXPROBE" ./cmd/ngxprobe
trap 'bench_stop' EXIT
source bench/nginx.sh
source bench/offsets.sh
nginx_offsets "$nginx"
echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r); RUNS=$RUNS DURATION=$DURATION bash bench/watch.sh"
# bpftrace 0.17 cannot read nginx's DWARF 5 bitfields: it reads the flag
# byte at the offsets ngxprobe's layout dump gives.
cat >"$work/recv.bt" <<BT
uprobe:$nginx:ngx_unix_recv { @c[tid] = arg0; @eof[tid] = *(uint8 *)(*(uint64 *)(arg0 + $off_read) + $off_evflags) & 1; }
uretprobe:$nginx:ngx_unix_recv /@c[tid]/ {
  \$now = *(uint8 *)(*(uint64 *)(@c[tid] + $off_read) + $off_evflags) & 1;
  if (\$now != @eof[tid]) { printf("flip eof %d -> %d conn %d\n", @eof[tid], \$now, *(uint64 *)(@c[tid] + $off_number)); }
  delete(@c[tid]); delete(@eof[tid]);
}
BEGIN { printf("attached\n"); }
BT
attach() {
  case "$1" in
    ngxprobe_watch_exact) "$NGXPROBE" watch -p "$master" 'c->read->eof' >/dev/null ;;
    ngxprobe_watch_diff_recv) "$NGXPROBE" watch -p "$master" --mode diff --at ngx_unix_recv 'c->read->eof' >/dev/null ;;
    bpftrace_recv_entry_return) bpftrace "$work/recv.bt" 2>&1 >/dev/null | cat ;;
  esac
}
rps() { wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$port/$1" | awk '/Requests\/sec/ {print int($2)}'; }
variants=(baseline ngxprobe_watch_exact ngxprobe_watch_diff_recv)
command -v bpftrace >/dev/null && variants+=(bpftrace_recv_entry_return)
for path in static proxy; do
  declare -A runs=()
  for _ in $(seq "$RUNS"); do
    for v in "${variants[@]}"; do
      if [ "$v" = baseline ]; then
        runs[$v]="${runs[$v]:-} $(rps "$path")"
        continue
      fi
      attach "$v" 2>"$work/probe.err" &
      probe_pid=$!
      # Wait for the stack unwinder's one-off module indexing (about a
      # second of CPU, reported as "stacks ready") to be over.
      ready=attached
      case "$v" in ngxprobe_*) ready="stacks ready" ;; esac
      for _ in $(seq 300); do grep -qi "$ready" "$work/probe.err" 2>/dev/null && break; sleep 0.05; done
      sleep 0.5
      runs[$v]="${runs[$v]:-} $(rps "$path")"
      pkill -INT -P "$probe_pid" 2>/dev/null || true; wait "$probe_pid" || true; probe_pid=""
    done
  done
  b=$(median ${runs[baseline]})
  for v in "${variants[@]}"; do
    m=$(median ${runs[$v]})
    printf 'wrk_%s %-28s median_rps %8s retention %s runs%s\n' "$path" "$v" "$m" "$(awk -v p="$m" -v b="$b" 'BEGIN {printf "%.3f", p/b}')" "${runs[$v]}"
  done
  unset runs
done
