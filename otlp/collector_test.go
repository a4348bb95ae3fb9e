package otlp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/otelcoltest"
	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/otlp"
)

// These tests export to a real OpenTelemetry Collector (internal/
// otelcoltest), over gRPC and over HTTP, and read what it wrote.

var protocols = []string{otlp.GRPC, otlp.HTTP}

func endpoint(col *otelcoltest.Collector, proto string) string {
	if proto == otlp.GRPC {
		return col.Endpoint()
	}
	return col.HTTPEndpoint()
}

// newExporter exports to col; Close is the test's to call, and t.Cleanup
// calls it too, for a test that fails first.
func newExporter(t *testing.T, col *otelcoltest.Collector, proto string, cfg otlp.Config) *otlp.Exporter {
	t.Helper()
	cfg.Endpoint = endpoint(col, proto)
	cfg.Protocol = proto
	cfg.Insecure = true
	if cfg.HostName == "" {
		cfg.HostName = "gw-1"
	}
	exp, err := otlp.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = exp.Close(ctx)
	})
	return exp
}

func closeExporter(t *testing.T, exp *otlp.Exporter, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return exp.Close(ctx)
}

// seqEvent is an event as the default probes make them, numbered by its
// value seq: a dozen values, one of them unreadable, and a stack of 12
// frames.
func seqEvent(seq int) output.Event {
	ev := output.Event{
		Time: time.Now(), PID: 100, TID: 100,
		Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request",
		Values: []output.Value{
			{Name: "seq", Expr: "seq", Readable: true, Data: int64(seq), Text: fmt.Sprint(seq)},
			{Name: "rc", Expr: "rc", Group: "request", Readable: true, Data: int64(499), Text: "499"},
			{Name: "status", Expr: "r->headers_out.status", Group: "request", Readable: true, Data: uint64(0), Text: "0"},
			{Name: "client", Expr: "r->connection->addr_text", Group: "request", Readable: true, Data: "127.0.0.1", Text: `"127.0.0.1"`},
			{Name: "request", Expr: "r->request_line", Group: "request", Readable: true, Data: "GET /slow HTTP/1.1", Text: `"GET /slow HTTP/1.1"`},
			{Name: "conn", Expr: "r->connection->number", Group: "client", Display: output.Connection, Readable: true, Data: uint64(seq), Text: fmt.Sprint(seq)},
			{Name: "role", Expr: "r->connection->listening", Group: "client", Display: output.Role, Readable: true, Data: "client", Text: "client"},
			{Name: "eof", Expr: "r->connection->read->eof", Group: "client read", Readable: true, Data: uint64(1), Text: "1"},
			{Name: "timedout", Expr: "r->connection->read->timedout", Group: "client read", Readable: true, Data: uint64(0), Text: "0"},
			{Name: "error", Expr: "r->connection->read->error", Group: "client read", Readable: true, Data: uint64(0), Text: "0"},
			{Name: "conn", Expr: "r->upstream->peer.connection->number", Group: "upstream", Display: output.Connection, Why: "NULL"},
		},
		Stack: &output.Stack{},
	}
	for i := range 12 {
		ev.Stack.Frames = append(ev.Stack.Frames, output.Frame{Module: "/usr/sbin/nginx", Address: 0x5a000 + uint64(i)*0x40, Symbol: "ngx_http_core_run_phases", Offset: 0x1d, File: "src/http/ngx_http_core_module.c", Line: 800 + i})
	}
	return ev
}

// seqs are the seq values received: every one, and the distinct ones.
func seqs(t *testing.T, recs []otelcoltest.Record) (all []int64, distinct map[int64]bool) {
	t.Helper()
	distinct = map[int64]bool{}
	for _, r := range recs {
		if r.EventName != otlp.EventName {
			continue
		}
		n, ok := r.Attributes["ngxprobe.value.seq"].(int64)
		if !ok {
			t.Fatalf("record without seq: %+v", r)
		}
		all = append(all, n)
		distinct[n] = true
	}
	return all, distinct
}

func TestExport(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			col := otelcoltest.Start(t, otelcoltest.Options{})
			exp := newExporter(t, col, proto, otlp.Config{
				Version:  "v0.test",
				Resource: otlp.Resource{PID: 4000, Attributes: map[string]string{"container.id": "abc123", "k8s.pod.name": "gw-7f9"}},
			})
			evTime := time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.UTC)
			ev := output.Event{
				Time: evTime, PID: 4001, TID: 4002,
				Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request",
				Values: []output.Value{
					{Name: "rc", Expr: "rc", Group: "request", Readable: true, Data: int64(499), Text: "499"},
					{Name: "client", Expr: "r->connection->addr_text", Group: "request", Readable: true, Data: "127.0.0.1", Text: `"127.0.0.1"`},
					{Name: "conn", Expr: "r->connection->number", Group: "client", Display: output.Connection, Readable: true, Data: uint64(17), Text: "17"},
					{Name: "conn", Expr: "r->upstream->peer.connection->number", Group: "upstream", Display: output.Connection, Why: "NULL"},
				},
				Stack: &output.Stack{Frames: []output.Frame{
					{Module: "/usr/sbin/nginx", Address: 0x5a3f2, Symbol: "ngx_http_finalize_request", File: "src/http/ngx_http_request.c", Line: 2510},
					{Lua: &output.LuaFrame{Kind: "lua", Text: "auth.lua:12: in function 'check'"}},
				}},
			}
			flip := output.Flip{
				Time: evTime.Add(time.Millisecond), PID: 4001, TID: 4001, Mode: "exact", Field: "c->close", Old: 0, New: 1,
				Conn: 17, Role: "client", LoggedAs: 17, Client: "127.0.0.1:50000",
				Function: "ngx_http_close_connection", File: "src/http/ngx_http_request.c", Line: 3700, Site: "movb",
			}
			if err := exp.Event(ev); err != nil {
				t.Fatal(err)
			}
			if err := exp.Flip(flip); err != nil {
				t.Fatal(err)
			}
			agg := output.Aggregate{Name: "rc", Func: "count", KeyNames: []string{"rc"}, Rows: []output.AggregateRow{
				{Keys: []output.Key{{Readable: true, Data: int64(499), Text: "499"}}, Count: 3},
				{Keys: []output.Key{{Readable: true, Data: int64(200), Text: "200"}}, Count: 40},
			}}
			if err := exp.Aggregates([]output.Aggregate{agg}); err != nil {
				t.Fatal(err)
			}
			if err := exp.Summary(output.Summary{Probes: []output.ProbeCount{{Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request", Hits: 3, Events: 3}}}); err != nil {
				t.Fatal(err)
			}
			if err := closeExporter(t, exp, 10*time.Second); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if s := exp.Stats(); s != (otlp.Stats{Records: 5, Exported: 5}) {
				t.Errorf("stats %+v", s)
			}
			if err := exp.Event(ev); !errors.Is(err, otlp.ErrClosed) {
				t.Errorf("Event after Close: %v, want ErrClosed", err)
			}

			recs := col.WaitRecords(t, 5, 10*time.Second)
			if len(recs) != 5 {
				t.Fatalf("%d records, want 5", len(recs))
			}
			for _, r := range recs {
				want := map[string]any{"service.name": "nginx", "host.name": "gw-1", "process.pid": int64(4000), "container.id": "abc123", "k8s.pod.name": "gw-7f9"}
				for k, v := range want {
					if r.Resource[k] != v {
						t.Errorf("%s: resource %s = %#v, want %#v", r.EventName, k, r.Resource[k], v)
					}
				}
				if r.Scope != otlp.Scope || r.ScopeVersion != "v0.test" {
					t.Errorf("scope %q %q", r.Scope, r.ScopeVersion)
				}
			}
			names := []string{recs[0].EventName, recs[1].EventName, recs[2].EventName, recs[3].EventName, recs[4].EventName}
			if want := []string{otlp.EventName, otlp.FlipName, otlp.AggregateName, otlp.AggregateName, otlp.SummaryName}; !slices.Equal(names, want) {
				t.Fatalf("records %v, want %v", names, want)
			}

			e := recs[0]
			if !e.Time.Equal(evTime) || e.SeverityText != "INFO" || e.Severity != 9 {
				t.Errorf("event time %v severity %d %q", e.Time, e.Severity, e.SeverityText)
			}
			wantEvent := map[string]any{
				"ngxprobe.probe": "ngx_http_finalize_request", "code.function": "ngx_http_finalize_request",
				"code.filepath": "src/http/ngx_http_request.c", "code.lineno": int64(2510),
				"ngxprobe.value.request.rc": int64(499), "ngxprobe.value.request.client": "127.0.0.1",
				"ngxprobe.value.client.conn": int64(17), "ngxprobe.unreadable": []any{"upstream.conn"},
				"nginx.connection.number": int64(17), "network.peer.address": "127.0.0.1",
				"process.pid": int64(4001), "thread.id": int64(4002),
				"code.stacktrace": "5a3f2: ngx_http_finalize_request+0x0 (src/http/ngx_http_request.c:2510)\n[lua] auth.lua:12: in function 'check'",
			}
			checkAttrs(t, "event", e.Attributes, wantEvent)
			if len(e.Attributes) != len(wantEvent) {
				t.Errorf("event: %d attributes, want %d: %v", len(e.Attributes), len(wantEvent), e.Attributes)
			}
			if want := `ngx_http_finalize_request pid 4001 tid 4002: request: rc=499 client="127.0.0.1"; client: conn=*17; upstream: -`; e.Body != want {
				t.Errorf("event body %q, want %q", e.Body, want)
			}

			f := recs[1]
			if !f.Time.Equal(flip.Time) {
				t.Errorf("flip time %v", f.Time)
			}
			checkAttrs(t, "flip", f.Attributes, map[string]any{
				"ngxprobe.flip.field": "c->close", "ngxprobe.flip.old": int64(0), "ngxprobe.flip.new": int64(1),
				"code.function": "ngx_http_close_connection", "code.filepath": "src/http/ngx_http_request.c", "code.lineno": int64(3700),
				"nginx.connection.number": int64(17), "network.peer.address": "127.0.0.1", "network.peer.port": int64(50000),
				"process.pid": int64(4001), "thread.id": int64(4001),
			})

			checkAttrs(t, "aggregate", recs[2].Attributes, map[string]any{"ngxprobe.aggregate.name": "rc", "ngxprobe.aggregate.key.rc": int64(499), "ngxprobe.aggregate.value": int64(3)})
			checkAttrs(t, "aggregate", recs[3].Attributes, map[string]any{"ngxprobe.aggregate.key.rc": int64(200), "ngxprobe.aggregate.value": int64(40)})
			if recs[3].Body != "@rc[200]: 40" {
				t.Errorf("aggregate body %q", recs[3].Body)
			}
			checkAttrs(t, "summary", recs[4].Attributes, map[string]any{"ngxprobe.hits": int64(3), "ngxprobe.events": int64(3), "ngxprobe.lost": int64(0), "ngxprobe.dropped": int64(0)})
		})
	}
}

func checkAttrs(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g := got[k]
		if fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", w) {
			t.Errorf("%s: %s = %#v, want %#v", what, k, g, w)
		}
	}
}

// With --all-nginx, each event's Origin is its record's resource: which
// master, binary, container and pod it came from.
func TestOrigin(t *testing.T) {
	col := otelcoltest.Start(t, otelcoltest.Options{})
	exp := newExporter(t, col, otlp.GRPC, otlp.Config{
		ServiceName: "edge",
		Resource:    otlp.Resource{PID: 1, Attributes: map[string]string{"k8s.node.name": "node-a", "container.id": "none"}},
	})
	pod := &output.Origin{MasterPID: 2, Binary: "/usr/sbin/nginx", ContainerID: "c2c2c2", PodName: "gw-0", PodNamespace: "edge", ContainerName: "nginx"}
	bare := &output.Origin{MasterPID: 3, Binary: "/opt/nginx/sbin/nginx"}
	for i, o := range []*output.Origin{nil, pod, bare, pod} {
		ev := seqEvent(i)
		ev.Origin = o
		if err := exp.Event(ev); err != nil {
			t.Fatal(err)
		}
	}
	f := output.Flip{Time: time.Now(), Mode: "diff", Field: "c->close", Origin: bare}
	if err := exp.Flip(f); err != nil {
		t.Fatal(err)
	}
	if err := closeExporter(t, exp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	recs := col.WaitRecords(t, 5, 10*time.Second)
	byPID := map[int64][]otelcoltest.Record{}
	for _, r := range recs {
		pid, _ := r.Resource["process.pid"].(int64)
		byPID[pid] = append(byPID[pid], r)
		if r.Resource["service.name"] != "edge" || r.Resource["k8s.node.name"] != "node-a" {
			t.Errorf("resource %v: want service.name edge and the node", r.Resource)
		}
	}
	if len(byPID[1]) != 1 || len(byPID[2]) != 2 || len(byPID[3]) != 2 {
		t.Fatalf("records by master: %v", byPID)
	}
	checkAttrs(t, "no origin", byPID[1][0].Resource, map[string]any{"container.id": "none"})
	checkAttrs(t, "pod", byPID[2][1].Resource, map[string]any{
		"process.executable.path": "/usr/sbin/nginx", "container.id": "c2c2c2",
		"k8s.pod.name": "gw-0", "k8s.namespace.name": "edge", "k8s.container.name": "nginx",
	})
	checkAttrs(t, "bare", byPID[3][0].Resource, map[string]any{"process.executable.path": "/opt/nginx/sbin/nginx", "container.id": "none", "k8s.pod.name": nil})
	if byPID[3][1].EventName != otlp.FlipName {
		t.Errorf("flip with an origin: %+v", byPID[3][1])
	}
}

// With no endpoint or protocol in Config, the OTEL_EXPORTER_OTLP_*
// variables choose; with them, Config wins.
func TestEnvironment(t *testing.T) {
	col := otelcoltest.Start(t, otelcoltest.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+col.Endpoint())
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,service.name=from-attrs")
	t.Setenv("OTEL_SERVICE_NAME", "")

	send := func(cfg otlp.Config, seq int) {
		t.Helper()
		exp, err := otlp.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := exp.Event(seqEvent(seq)); err != nil {
			t.Fatal(err)
		}
		if err := closeExporter(t, exp, 10*time.Second); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	send(otlp.Config{}, 1)                                                                        // all from the environment
	send(otlp.Config{Protocol: otlp.HTTP, Endpoint: col.HTTPEndpoint(), ServiceName: "flags"}, 2) // the flags win
	recs := col.WaitRecords(t, 2, 10*time.Second)
	sort.Slice(recs, func(i, j int) bool {
		return recs[i].Attributes["ngxprobe.value.seq"].(int64) < recs[j].Attributes["ngxprobe.value.seq"].(int64)
	})
	if got := recs[0].Resource["service.name"]; got != "from-attrs" {
		t.Errorf("service.name %v, want from-attrs (OTEL_RESOURCE_ATTRIBUTES)", got)
	}
	if got := recs[1].Resource["service.name"]; got != "flags" {
		t.Errorf("service.name %v, want flags (Config)", got)
	}
	for _, r := range recs {
		if r.Resource["deployment.environment"] != "test" {
			t.Errorf("resource %v: no deployment.environment", r.Resource)
		}
	}

	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := otlp.New(context.Background(), otlp.Config{}); !errors.Is(err, otlp.ErrProtocol) {
		t.Errorf("http/json: %v, want ErrProtocol", err)
	}
	if _, err := otlp.New(context.Background(), otlp.Config{Protocol: otlp.GRPC, Endpoint: "collector"}); !errors.Is(err, otlp.ErrEndpoint) {
		t.Errorf("endpoint without port: %v, want ErrEndpoint", err)
	}
	if _, err := otlp.New(context.Background(), otlp.Config{Protocol: otlp.GRPC, Endpoint: "ftp://collector:21"}); !errors.Is(err, otlp.ErrEndpoint) {
		t.Errorf("ftp endpoint: %v, want ErrEndpoint", err)
	}
}

// durations sorts ds and returns the median, the 99th percentile and the
// longest.
func durations(ds []time.Duration) (p50, p99, longest time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100], ds[len(ds)-1]
}

// The Collector is down when the trace starts: Event does not wait,
// records past the queue are dropped and counted exactly, and once the
// Collector is up the queued records and the later ones arrive, and so
// does the dropped counter, cumulative.
func TestCollectorDownAtStart(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			col := otelcoltest.Start(t, otelcoltest.Options{Down: true})
			var errs, metricErrs atomic.Int64
			onError := func(err error) {
				switch {
				case errors.Is(err, otlp.ErrMetrics):
					metricErrs.Add(1)
				case errors.Is(err, otlp.ErrDropped):
					errs.Add(1)
				default:
					t.Errorf("OnError: %v, want ErrDropped or ErrMetrics", err)
				}
			}
			exp := newExporter(t, col, proto, otlp.Config{QueueSize: 100, BatchSize: 50, MetricInterval: 200 * time.Millisecond, OnError: onError})

			const down, up = 2000, 300
			took := make([]time.Duration, 0, down)
			for i := range down {
				ev := seqEvent(i)
				start := time.Now()
				if err := exp.Event(ev); err != nil {
					t.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			p50, p99, longest := durations(took)
			s := exp.Stats()
			t.Logf("collector down: %d events, Event took p50 %v, p99 %v, max %v; stats %+v", down, p50, p99, longest, s)
			if p50 > 200*time.Microsecond || p99 > 10*time.Millisecond {
				t.Errorf("Event waits with the collector down: p50 %v, p99 %v", p50, p99)
			}
			if s.Dropped < down-100-50 || s.Exported != 0 {
				t.Errorf("stats %+v: want at least %d dropped, none exported", s, down-150)
			}

			// A metric export fails meanwhile; the next ones carry its
			// counts.
			for deadline := time.Now().Add(10 * time.Second); metricErrs.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if metricErrs.Load() != 1 {
				t.Errorf("%d metric export failures reported while the collector was down, want 1 (the first)", metricErrs.Load())
			}

			col.Up()
			upAt := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := exp.Flush(ctx); err != nil {
				t.Fatalf("flush after the collector came up: %v", err)
			}
			t.Logf("queued records exported %v after the collector came up; stats %+v", time.Since(upAt).Round(time.Millisecond), exp.Stats())
			// The outage's drops reach the Collector as the dropped
			// counter once it is back: its first value collected from
			// now on is Dropped(), which nothing changes until more
			// events come.
			flushed, dropped := time.Now(), exp.Dropped()
			p := col.WaitPoint(t, otlp.MetricRecords, outcome(otlp.OutcomeDropped), func(p otelcoltest.Point) bool { return p.Time.After(flushed) }, 20*time.Second)
			t.Logf("dropped counter %d at %v, %v after the collector came up; %d metric export failures reported",
				p.Int, p.Time.Format("15:04:05.000"), p.Time.Sub(upAt).Round(time.Millisecond), metricErrs.Load())
			if uint64(p.Int) != dropped || exp.Dropped() != dropped {
				t.Errorf("dropped counter %d, want Dropped() %d (now %d)", p.Int, dropped, exp.Dropped())
			}
			for i := range up {
				if err := exp.Event(seqEvent(down + i)); err != nil {
					t.Fatal(err)
				}
				if i%50 == 49 {
					if err := exp.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := exp.Summary(output.Summary{}); err != nil {
				t.Fatal(err)
			}
			err := closeExporter(t, exp, 10*time.Second)
			s = exp.Stats()
			if s.Dropped > 0 && !errors.Is(err, otlp.ErrDropped) {
				t.Errorf("Close: %v, want ErrDropped", err)
			}
			recs, rerr := col.Records()
			if rerr != nil {
				t.Fatal(rerr)
			}
			all, distinct := seqs(t, recs)
			t.Logf("sent %d, received %d, dropped %d, OnError %d (and %d for metrics); Close: %v", s.Records, len(recs), s.Dropped, errs.Load(), metricErrs.Load(), err)
			if errors.Is(err, otlp.ErrMetrics) {
				t.Errorf("Close: %v: the final metric export failed", err)
			}
			checkCounter(t, col, s)
			if s.Records != down+up+1 || s.Records != s.Exported+s.Dropped || uint64(len(recs)) != s.Exported {
				t.Errorf("stats %+v, %d records received: want %d sent = received + dropped", s, len(recs), down+up+1)
			}
			if len(all) != len(distinct) {
				t.Errorf("%d events received, %d distinct", len(all), len(distinct))
			}
			for i := range up {
				if !distinct[int64(down+i)] {
					t.Fatalf("event %d, sent after the collector came up, not received", down+i)
				}
			}
			sum := recs[len(recs)-1]
			if sum.EventName != otlp.SummaryName || uint64(sum.Attributes["ngxprobe.dropped"].(int64)) != s.Dropped {
				t.Errorf("last record %s %v, want the summary with ngxprobe.dropped %d", sum.EventName, sum.Attributes, s.Dropped)
			}
		})
	}
}

// The Collector is killed while events flow, and restarted on the same
// port: the sender never waits, every record is counted once, and the
// records sent after the restart arrive.
func TestCollectorKilledMidRun(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			col := otelcoltest.Start(t, otelcoltest.Options{})
			exp := newExporter(t, col, proto, otlp.Config{QueueSize: 500, BatchSize: 100})

			var sent atomic.Int64
			var slowest atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					if err := exp.Event(seqEvent(i)); err != nil {
						t.Error(err)
						return
					}
					if d := int64(time.Since(start)); d > slowest.Load() {
						slowest.Store(d)
					}
					sent.Add(1)
					if i%10 == 9 {
						time.Sleep(time.Millisecond) // ~10k events/s
					}
				}
			}()

			time.Sleep(500 * time.Millisecond)
			before, _ := col.Records()
			col.Kill()
			killed := exp.Stats()
			time.Sleep(time.Second)
			down := exp.Stats()
			col.Up()
			upAt, upStats := time.Now(), exp.Stats()
			for exp.Stats().Exported == upStats.Exported && time.Since(upAt) < 10*time.Second {
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("export resumed %v after the collector was up again", time.Since(upAt).Round(time.Millisecond))
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()
			// Then a trickle the exporter keeps up with, even slowed by
			// the race detector: all of it arrives.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := exp.Flush(ctx); err != nil { // the flood's backlog
				t.Fatal(err)
			}
			first := sent.Load()
			for i := first; i < first+100; i++ {
				if err := exp.Event(seqEvent(int(i))); err != nil {
					t.Fatal(err)
				}
				sent.Add(1)
				if i%20 == 19 {
					if err := exp.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}

			err := closeExporter(t, exp, 20*time.Second)
			s := exp.Stats()
			recs, rerr := col.Records()
			if rerr != nil {
				t.Fatal(rerr)
			}
			all, distinct := seqs(t, recs)
			t.Logf("%d received before the kill (stats then %+v); 1 s down: stats %+v", len(before), killed, down)
			t.Logf("sent %d: received %d (%d distinct), dropped %d; slowest Event %v; Close: %v",
				sent.Load(), len(all), len(distinct), s.Dropped, time.Duration(slowest.Load()), err)
			if s.Records != uint64(sent.Load()) || s.Records != s.Exported+s.Dropped {
				t.Errorf("stats %+v: want %d records = exported + dropped", s, sent.Load())
			}
			// A batch the Collector wrote as it was killed, before it
			// answered, is sent again after the restart: the file then
			// has it twice, and it was counted once, exported.
			if uint64(len(distinct))+s.Dropped != uint64(sent.Load()) || uint64(len(distinct)) != s.Exported {
				t.Errorf("%d distinct received + %d dropped, want %d sent (%d exported)", len(distinct), s.Dropped, sent.Load(), s.Exported)
			}
			if s.Dropped == 0 {
				t.Errorf("nothing dropped while the collector was down for 1 s")
			}
			for i := first; i < sent.Load(); i++ {
				if !distinct[i] {
					t.Fatalf("event %d, sent seconds after the restart, not received", i)
				}
			}
			if time.Duration(slowest.Load()) > 50*time.Millisecond {
				t.Errorf("slowest Event %v", time.Duration(slowest.Load()))
			}
		})
	}
}

// A Collector that accepts and does not answer (paused: overloaded, or a
// network that drops): Event still does not wait, requests time out and
// are retried, and once it answers again every record is counted once.
func TestCollectorSlow(t *testing.T) {
	col := otelcoltest.Start(t, otelcoltest.Options{})
	exp := newExporter(t, col, otlp.GRPC, otlp.Config{QueueSize: 200, BatchSize: 50, Timeout: 300 * time.Millisecond})
	const n = 3000
	took := make([]time.Duration, 0, n)
	col.Pause()
	paused := true
	defer func() {
		if paused {
			col.Resume()
		}
	}()
	for i := range n {
		ev := seqEvent(i)
		start := time.Now()
		if err := exp.Event(ev); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		if i == n/2 {
			time.Sleep(time.Second) // requests time out meanwhile
		}
	}
	p50, p99, longest := durations(took)
	t.Logf("collector paused: %d events, Event took p50 %v, p99 %v, max %v; stats %+v", n, p50, p99, longest, exp.Stats())
	if p50 > 200*time.Microsecond || p99 > 10*time.Millisecond {
		t.Errorf("Event waits on a paused collector: p50 %v, p99 %v", p50, p99)
	}
	col.Resume()
	paused = false
	err := closeExporter(t, exp, 20*time.Second)
	s := exp.Stats()
	recs, rerr := col.Records()
	if rerr != nil {
		t.Fatal(rerr)
	}
	all, distinct := seqs(t, recs)
	t.Logf("sent %d: received %d (%d distinct), dropped %d; Close: %v", s.Records, len(all), len(distinct), s.Dropped, err)
	// A request that timed out on the client may still be served once
	// the Collector runs again, and its retry too: received twice,
	// counted once.
	if s.Records != n || s.Records != s.Exported+s.Dropped || uint64(len(distinct)) != s.Exported {
		t.Errorf("stats %+v, %d distinct received: want %d sent = received + dropped", s, len(distinct), n)
	}
	if s.Dropped == 0 || s.Exported == 0 {
		t.Errorf("stats %+v: want some dropped while paused, and the queued ones exported", s)
	}
}

// Close with the Collector down gives up at its deadline, and counts what
// it could not send.
func TestCloseDeadline(t *testing.T) {
	col := otelcoltest.Start(t, otelcoltest.Options{Down: true})
	var onError []error
	var mu sync.Mutex
	exp := newExporter(t, col, otlp.GRPC, otlp.Config{OnError: func(err error) { mu.Lock(); onError = append(onError, err); mu.Unlock() }})
	for i := range 100 {
		if err := exp.Event(seqEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	err := closeExporter(t, exp, 500*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(err, otlp.ErrDropped) || took > 3*time.Second {
		t.Errorf("Close: %v after %v, want ErrDropped after about 500ms", err, took)
	}
	if s := exp.Stats(); s != (otlp.Stats{Records: 100, Dropped: 100}) {
		t.Errorf("stats %+v", s)
	}
	if exp.Dropped() != 100 {
		t.Errorf("Dropped() = %d", exp.Dropped())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(onError) == 0 || !errors.Is(onError[0], otlp.ErrDropped) {
		t.Errorf("OnError got %v", onError)
	}
	t.Logf("Close gave up after %v: %v", took.Round(time.Millisecond), err)
	if err := exp.Close(context.Background()); !errors.Is(err, otlp.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
