# Sourced by the benchmarks: perf probe creates uprobe events through
# tracefs, which these machines do not mount. Mount it for the benchmark
# only, and undo everything on exit. ngxprobe itself never needs tracefs.
# Subshells add probes too, so the mount is remembered in a file.
perf_mark=/run/ngxpbench-mounted-tracefs
perf_setup() { # "GROUP:EVENT=FUNC[%return] ARGS..." ; one call per event
  if ! mountpoint -q /sys/kernel/tracing; then
    mount -t tracefs nodev /sys/kernel/tracing && touch "$perf_mark"
  fi
  perf probe -q -x "$PERF_BINARY" --add "$*"
}
perf_delete() { perf probe -q -d 'ngxpbench:*' 2>/dev/null || true; }
# perf_stop ends a perf_record (in whatever subshell runs it), waits until
# perf has exited, then deletes the events: a live or defined event keeps
# a breakpoint that would slow the next variant.
perf_stop() {
  pkill -INT -f "perf record -q -e ngxpbench" 2>/dev/null || true
  for _ in $(seq 100); do pgrep -f "perf record -q -e ngxpbench" >/dev/null || break; sleep 0.1; done
  perf_delete
}
perf_teardown() {
  if mountpoint -q /sys/kernel/tracing; then perf_delete; fi
  if [ -f "$perf_mark" ]; then umount /sys/kernel/tracing; rm -f "$perf_mark"; fi
}
# perf_record runs until SIGINT, printing "attached" once recording.
perf_record() {
  perf record -q -e 'ngxpbench:*' -a -o "$1" >/dev/null 2>&1 &
  local p=$!
  sleep 1
  echo attached >&2
  wait "$p"
}
