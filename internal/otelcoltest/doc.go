// Package otelcoltest runs a real OpenTelemetry Collector for ngxprobe's
// tests, so that the OTLP exporter is tested against the receiver people
// run, not a mock.
//
// The Collector is cmd/testcollector: the Collector's own service
// (go.opentelemetry.io/collector/otelcol) and OTLP receiver, gRPC and
// HTTP, and an exporter of its own that appends every log record it is
// given to a file as one OTLP/JSON line, and every metrics request to
// another file as one OTLP/JSON line, before the receiver answers.
// Build compiles it once per test process with the go tool, and caches
// the binary under ${NGXPROBE_CACHE:-/var/cache/ngxprobe}, in
// otelcol-<hash8>/ keyed by go.mod, go.sum, the command's sources and the
// Go version, as nginxtest caches its nginx builds. The Collector's
// modules are linked into that binary only: neither ngxprobe nor this
// package imports them.
//
// A typical test:
//
//	col := otelcoltest.Start(t, otelcoltest.Options{})
//	// export to col.Endpoint() (gRPC, host:port) or col.HTTPEndpoint() (http://host:port)
//	recs := col.WaitRecords(t, 3, 10*time.Second)
//	recs[0].Attributes["nginx.connection.number"] // int64(5)
//	p, ok, err := col.Latest("ngxprobe.otlp.records", map[string]any{"outcome": "dropped"})
//	p.Int // the last value received of that series
//
// A Collector can be started down (Options.Down) and brought up later,
// killed (SIGKILL) or stopped (SIGTERM) and restarted on the same ports
// with the same file (what it received survives), or paused (SIGSTOP:
// connections are accepted, nothing answers) and resumed. Everything it writes
// (config.yaml, records.jsonl, metrics.jsonl, collector.log) is in the test's
// t.TempDir(); t.Cleanup kills it. Nothing needs root; when the binary
// can't be built the test is skipped (failed when CI=true).
package otelcoltest
