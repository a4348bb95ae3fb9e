#!/usr/bin/env bash
# bench/fuzz.sh: run every fuzz target of the repository, one after the
# other, for FUZZTIME each (default 10m), and print the executions and the
# failures of each. Not run by CI: CI runs the seed corpora
# (testdata/fuzz/FuzzX) as ordinary tests with go test.
#
#   bench/fuzz.sh                      # 10 minutes a target
#   FUZZTIME=30s bench/fuzz.sh         # a quick pass
#   FUZZ='FuzzOpen|FuzzUnwind' bench/fuzz.sh   # only these targets
#
# FUZZMINIMIZETIME (default 10s) bounds go test's minimizing of each new
# input: its default, 60s, would eat most of a short run. FUZZPARALLEL
# (default: the number of CPUs) is the number of fuzzing workers. A failing
# input is written to the package's testdata/fuzz/FuzzX/ (go test's way),
# where go test then runs it as a seed: fix the bug, keep the file.
set -u
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
FUZZTIME=${FUZZTIME:-10m}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-10s}
FUZZPARALLEL=${FUZZPARALLEL:-$(nproc)}
FUZZ=${FUZZ:-.}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# The packages that define fuzz targets (grep first: go test -list runs a
# package's TestMain, and some build nginx), then their targets' names.
pkgs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
targets=()
for dir in $pkgs; do
	for name in $(go test -list 'Fuzz.*' "$dir" | grep '^Fuzz' | grep -E "$FUZZ"); do
		targets+=("$dir $name")
	done
done
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz target matches FUZZ=$FUZZ" >&2
	exit 2
fi
echo "fuzz.sh: ${#targets[@]} targets, $FUZZTIME each, $FUZZPARALLEL workers"

failed=0
summary=()
for t in "${targets[@]}"; do
	set -- $t
	dir=$1 name=$2
	log="$logs/${dir//\//_}-$name.log"
	start=$(date +%s)
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
		-parallel "$FUZZPARALLEL" "$dir" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	interesting=$(grep -o 'new interesting: [0-9]*' "$log" | tail -1 | awk '{print $3}')
	if [ $rc -eq 0 ]; then
		result="ok"
	else
		failed=$((failed + 1))
		input=$(grep -o 'Failing input written to .*' "$log" | sed 's/Failing input written to //')
		result="FAIL ${input:+$dir/$input}"
	fi
	line=$(printf '%-22s %-22s %6ss %12s execs %6s new  %s' "${dir#./}" "$name" "$secs" "${execs:-0}" "${interesting:-0}" "$result")
	echo "$line"
	summary+=("$line")
	if [ $rc -ne 0 ]; then
		grep -v '^\s*$' "$log" | grep -v '^fuzz: elapsed' | head -40 | sed 's/^/    /'
	fi
done
echo
echo "fuzz.sh: ${#targets[@]} targets, $failed failed"
printf '%s\n' "${summary[@]}"
[ $failed -eq 0 ]
