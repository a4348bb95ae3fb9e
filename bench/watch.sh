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
variants=(baseline ngxprobe_watch_exact ngxprobe_watch_diff_recv)
command -v bpftrace >/dev/null && variants+=(bpftrace_recv_entry_return)
# The one-off indexing of debug info for stacks (about a second of CPU) is
# over once ngxprobe says "stacks ready".
ready_line() { case "$1" in ngxprobe_*) echo "stacks ready" ;; *) echo attached ;; esac; }
bench_wrk "${variants[@]}"
