// Package bench holds ngxprobe's benchmarks. The shell scripts measure
// whole commands side by side (run.sh: nginx throughput and attach time;
// hitcost.sh: per-hit cost against an empty uprobe and bpftrace); the Go
// benchmarks measure unwinding and symbolization on stacks captured from
// the test nginx. See README.md for figures and commands.
package bench
