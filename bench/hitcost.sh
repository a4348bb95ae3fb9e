#!/usr/bin/env bash
# Per-hit cost of a probe against the floor (an empty uprobe), measured on
# a function called in a tight loop, variants alternating in one run.
#   RUNS=5 bash bench/hitcost.sh
# VARIANTS="none empty_uprobe ..." runs a subset; PREBUILT=DIR takes
# ngxprobe, emptyprobe and loop from DIR instead of building them (the
# kernel matrix runs it so in QEMU guests, which have no time to build).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
CALLS=${CALLS:-100000}
work=$(mktemp -d)
source bench/perfprobe.sh
trap 'pkill -INT -f "$work/loop" 2>/dev/null || true; perf_teardown; rm -rf "$work"' EXIT
if [ -n "${PREBUILT:-}" ]; then
  mkdir -p "$work/bin"
  cp "$PREBUILT/ngxprobe" "$PREBUILT/emptyprobe" "$work/bin/"
  cp "$PREBUILT/loop" "$work/loop"
  cd "$work" && ln -s "$OLDPWD/bench" bench
else
  go build -o bin/ngxprobe ./cmd/ngxprobe
  go build -o bin/emptyprobe ./bench/emptyprobe
  gcc -O2 -g -fomit-frame-pointer -o "$work/loop" bench/hitcost/loop.c
fi
loop="$work/loop"
leaf='r->top->mid->leaf'
eight="$leaf->f[0],$leaf->f[1],$leaf->f[2],$leaf->f[3],$leaf->f[4],$leaf->f[5],$leaf->f[6],$leaf->f[7]"
eight_list=${eight//,/, }
bt_eight='$l = *(uint64*)(*(uint64*)(*(uint64*)(arg0+8)+16)+8); printf("%d %d %d %d %d %d %d %d\n", *(int64*)($l), *(int64*)($l+8), *(int64*)($l+16), *(int64*)($l+24), *(int64*)($l+32), *(int64*)($l+40), *(int64*)($l+48), *(int64*)($l+56));'

# variant name -> command that attaches and prints "attached" on stderr
attach() {
  case "$1" in
    none) return 0 ;;
    empty_uprobe) bin/emptyprobe "$loop" target ;;
    ngxprobe_1_field) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 --probe 'target:r->id' >/dev/null ;;
    ngxprobe_8_fields_3_hops) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 --probe "target:$eight" >/dev/null ;;
    ngxprobe_8_fields_stack) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 --stack-bytes 8192 --probe "target:$eight,stack" >/dev/null ;;
    # A filter that never matches, reading through the same 3 hops: the
    # cost of a hit the filter drops, against the plain 8-field event.
    ngxprobe_filtered_out) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 -e "target / $leaf->f[0] == 999 / { print($eight_list) }" >/dev/null ;;
    ngxprobe_filter_passes) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 -e "target / $leaf->f[0] == 1 / { print($eight_list) }" >/dev/null ;;
    ngxprobe_count_by_key) bin/ngxprobe run --binary "$loop" -e "target { @[r->id] = count() }" >/dev/null ;;
    ngxprobe_uretprobe) bin/ngxprobe run --binary "$loop" --ringbuf 268435456 --probe 'target%return:$retval' >/dev/null ;;
    # The event exists only while it runs: a defined perf probe event keeps
    # a breakpoint that slows every other variant.
    perf_probe_8_fields) PERF_BINARY=$loop perf_setup "$perf_args" && perf_record "$work/perf.data" ;;
    bpftrace_8_fields) bpftrace -e "uprobe:$loop:target { $bt_eight }" 2>&1 >/dev/null | sed 's/^Attaching.*/attached/' ;;
  esac
}
variants=(none empty_uprobe ngxprobe_1_field ngxprobe_8_fields_3_hops ngxprobe_filtered_out ngxprobe_filter_passes ngxprobe_count_by_key ngxprobe_8_fields_stack ngxprobe_uretprobe)
command -v bpftrace >/dev/null && variants+=(bpftrace_8_fields)
perf_args="ngxpbench:hit=target $(for i in 0 1 2 3 4 5 6 7; do printf 'f%d=%s->f[%d] ' $i "$leaf" $i; done)"
command -v perf >/dev/null && variants+=(perf_probe_8_fields)
if [ -n "${VARIANTS:-}" ]; then read -r -a variants <<<"$VARIANTS"; fi
declare -A results
for run in $(seq "$RUNS"); do
  for v in "${variants[@]}"; do
    calls=$CALLS
    [ "$v" = ngxprobe_8_fields_stack ] && calls=$((CALLS / 5))
    if [ "$v" = none ]; then
      ns=$("$loop" "$calls" | awk '{print $1}')
    else
      attach "$v" 2>"$work/attach.err" &
      pid=$!
      for _ in $(seq 200); do grep -q attached "$work/attach.err" 2>/dev/null && break; sleep 0.05; done
      [ "$v" = bpftrace_8_fields ] && sleep 1 # bpftrace prints before attaching all
      ns=$("$loop" "$calls" | awk '{print $1}')
      pkill -INT -P "$pid" 2>/dev/null || true; kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
      [ "$v" = perf_probe_8_fields ] && perf_stop
      lost=$(grep -o '[0-9]* lost' "$work/attach.err" | head -1 || true)
      [ -n "$lost" ] && [ "$lost" != "0 lost" ] && echo "# $v run $run: $lost" >&2
    fi
    results[$v]="${results[$v]:-} $ns"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r); RUNS=$RUNS CALLS=$CALLS bash bench/hitcost.sh"
floor=$(median ${results[empty_uprobe]})
printf '%-28s %12s %10s   %s\n' variant ns/call ratio runs
for v in "${variants[@]}"; do
  m=$(median ${results[$v]})
  printf '%-28s %12s %10s  %s\n' "$v" "$m" "$(awk -v a="$m" -v b="$floor" 'BEGIN {printf "%.2f", a/b}')" "${results[$v]}"
done
