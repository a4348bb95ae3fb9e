#!/usr/bin/env bash
# Prints a bpftrace script equivalent to ngxprobe's default probe set on
# NGINX: the same probe points and fields. bpftrace 0.17 cannot follow
# typedef'd nginx structs through DWARF, so offsets come from ngxprobe's
# own layout dump of the same binary.
#   bash bench/bpftrace-default.sh NGINX > default.bt
set -euo pipefail
nginx=$1
source "$(dirname "$0")/offsets.sh"
nginx_offsets "$nginx"
conn=$off_conn status=$off_status number=$off_number read=$off_read write=$off_write cflags=$off_cflags evflags=$off_evflags
cat <<BT
uprobe:$nginx:ngx_http_finalize_request {
  \$c = *(uint64 *)(arg0 + $conn);
  \$r = *(uint64 *)(\$c + $read);
  \$w = *(uint64 *)(\$c + $write);
  \$rf = *(uint8 *)(\$r + $evflags);
  \$wf = *(uint8 *)(\$w + $evflags);
  printf("finalize rc=%d status=%d conn=%d read eof=%d timedout=%d error=%d write eof=%d timedout=%d error=%d c flags=%x\n",
    arg1, *(uint64 *)(arg0 + $status), *(uint64 *)(\$c + $number),
    \$rf & 1, (\$rf >> 2) & 1, (\$rf >> 1) & 1, \$wf & 1, (\$wf >> 2) & 1, (\$wf >> 1) & 1,
    *(uint8 *)(\$c + $cflags));
}
uprobe:$nginx:ngx_unix_recv { @c[tid] = arg0; @size[tid] = arg2; }
uretprobe:$nginx:ngx_unix_recv {
  \$c = @c[tid];
  \$rf = *(uint8 *)(*(uint64 *)(\$c + $read) + $evflags);
  printf("recv ret=%d size=%d conn=%d eof=%d error=%d\n", retval, @size[tid], *(uint64 *)(\$c + $number), \$rf & 1, (\$rf >> 1) & 1);
  delete(@c[tid]); delete(@size[tid]);
}
BT
