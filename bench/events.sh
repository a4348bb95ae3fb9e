#!/usr/bin/env bash
# Event throughput: raise the hit rate (1 or 2 processes calling a probed
# function in a tight loop) until events are lost, with and without stacks,
# and check that every hit is accounted for: hits = events + lost.
#   CALLS=200000 bash bench/events.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-200000}
go build -o bin/ngxprobe ./cmd/ngxprobe
work=$(mktemp -d)
probe_pid=""
trap '[ -n "$probe_pid" ] && kill -INT "$probe_pid" 2>/dev/null; rm -rf "$work"' EXIT
gcc -O2 -g -fomit-frame-pointer -o "$work/loop" bench/hitcost/loop.c
echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r); CALLS=$CALLS bash bench/events.sh"
printf '%-10s %-6s %-10s %10s %10s %10s %12s %12s %s\n' variant procs ringbuf hits events lost hits/s events/s exact
for variant in plain stack; do
  for ring in 4194304 65536; do
    for procs in 1 2; do
      expr='r->id'
      calls=$CALLS
      if [ "$variant" = stack ]; then expr='r->id,stack'; calls=$((CALLS / 4)); fi
      bin/ngxprobe run --binary "$work/loop" -o json --ringbuf "$ring" --probe "target:$expr" >/dev/null 2>"$work/summary" &
      probe_pid=$!
      for _ in $(seq 200); do grep -q attached "$work/summary" && break; sleep 0.05; done
      start=$(date +%s%N)
      for _ in $(seq "$procs"); do "$work/loop" "$calls" >/dev/null & done
      wait $(jobs -p | grep -v "^$probe_pid$") 2>/dev/null || true
      end=$(date +%s%N)
      kill -INT "$probe_pid"; wait "$probe_pid" || true; probe_pid=""
      line=$(grep '"summary"' "$work/summary")
      hits=$(echo "$line" | grep -o '"hits":[0-9]*' | head -1 | cut -d: -f2)
      events=$(echo "$line" | grep -o '"events":[0-9]*' | head -1 | cut -d: -f2)
      lost=$(echo "$line" | grep -o '"lost":[0-9]*' | head -1 | cut -d: -f2)
      secs=$(awk -v a="$start" -v b="$end" 'BEGIN {print (b-a)/1e9}')
      exact=no; [ "$hits" -eq $((events + lost)) ] && exact=yes
      printf '%-10s %-6s %-10s %10s %10s %10s %12.0f %12.0f %s\n' "$variant" "$procs" "$ring" "$hits" "$events" "$lost" \
        "$(awk -v h="$hits" -v s="$secs" 'BEGIN {print h/s}')" "$(awk -v e="$events" -v s="$secs" 'BEGIN {print e/s}')" "$exact"
    done
  done
done
