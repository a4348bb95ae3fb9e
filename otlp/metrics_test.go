package otlp_test

import (
	"errors"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/otelcoltest"
	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/otlp"
)

// These tests read the exporter's own metric, ngxprobe.otlp.records, at a
// real Collector.

func outcome(o string) map[string]any { return map[string]any{otlp.MetricOutcome: o} }

// checkCounter checks both series of the counter at the Collector: int
// sums, cumulative and monotonic, from one start, never going down, and
// ending at s's Exported and Dropped.
func checkCounter(t *testing.T, col *otelcoltest.Collector, s otlp.Stats) {
	t.Helper()
	for _, o := range []struct {
		outcome string
		want    uint64
	}{{otlp.OutcomeExported, s.Exported}, {otlp.OutcomeDropped, s.Dropped}} {
		series, err := col.Series(otlp.MetricRecords, outcome(o.outcome))
		if err != nil {
			t.Fatal(err)
		}
		if len(series) == 0 {
			t.Errorf("%s: no point received", o.outcome)
			continue
		}
		sort.SliceStable(series, func(i, j int) bool { return series[i].Time.Before(series[j].Time) })
		for i, p := range series {
			if p.Kind != "sum" || !p.Monotonic || p.Temporality != "cumulative" || !p.IsInt || p.Unit != "{record}" {
				t.Errorf("%s: point %+v: want a cumulative monotonic int sum of {record}", o.outcome, p)
			}
			if !p.Start.Equal(series[0].Start) {
				t.Errorf("%s: start %v, then %v", o.outcome, series[0].Start, p.Start)
			}
			if i > 0 && p.Int < series[i-1].Int {
				t.Errorf("%s: %d, then %d", o.outcome, series[i-1].Int, p.Int)
			}
		}
		if last := series[len(series)-1]; uint64(last.Int) != o.want {
			t.Errorf("%s: last value %d (of %d points), want %d", o.outcome, last.Int, len(series), o.want)
		}
	}
}

// With the Collector up, the counter says at Close that every record was
// exported: its only export is Close's, the interval being an hour.
func TestMetrics(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			col := otelcoltest.Start(t, otelcoltest.Options{})
			exp := newExporter(t, col, proto, otlp.Config{
				Version: "v0.test", MetricInterval: time.Hour,
				Resource: otlp.Resource{PID: 4000, Attributes: map[string]string{"container.id": "abc123"}},
			})
			const n = 1234
			for i := range n {
				if err := exp.Event(seqEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := exp.Summary(output.Summary{}); err != nil {
				t.Fatal(err)
			}
			if err := closeExporter(t, exp, 10*time.Second); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s := exp.Stats()
			if s != (otlp.Stats{Records: n + 1, Exported: n + 1}) {
				t.Errorf("stats %+v", s)
			}
			pts, err := col.Points()
			if err != nil {
				t.Fatal(err)
			}
			if len(pts) != 2 {
				t.Fatalf("%d points, want 2 (exported and dropped, from Close): %+v", len(pts), pts)
			}
			checkCounter(t, col, s)
			p, _, _ := col.Latest(otlp.MetricRecords, outcome(otlp.OutcomeExported))
			checkAttrs(t, "metric resource", p.Resource, map[string]any{"service.name": "nginx", "host.name": "gw-1", "process.pid": int64(4000), "container.id": "abc123"})
			if p.Scope != otlp.Scope || p.ScopeVersion != "v0.test" || p.Description == "" {
				t.Errorf("scope %q %q, description %q", p.Scope, p.ScopeVersion, p.Description)
			}
			if len(p.Attributes) != 1 {
				t.Errorf("attributes %v, want outcome only", p.Attributes)
			}
		})
	}
}

// A Collector that is down fails every metric export: OnError hears of
// the first only, the records are not affected, and Close says the final
// export failed, within its deadline.
func TestMetricsCollectorDown(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			col := otelcoltest.Start(t, otelcoltest.Options{Down: true})
			var metricErrs, other atomic.Int64
			exp := newExporter(t, col, proto, otlp.Config{MetricInterval: 100 * time.Millisecond, OnError: func(err error) {
				if errors.Is(err, otlp.ErrMetrics) {
					metricErrs.Add(1)
				} else {
					other.Add(1)
				}
			}})
			deadline := time.Now().Add(10 * time.Second)
			for metricErrs.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(2500 * time.Millisecond) // more failed exports
			if metricErrs.Load() != 1 || other.Load() != 0 {
				t.Errorf("OnError: %d metric errors (want the first only), %d others", metricErrs.Load(), other.Load())
			}
			start := time.Now()
			err := closeExporter(t, exp, 300*time.Millisecond)
			took := time.Since(start)
			t.Logf("Close after %v: %v", took.Round(time.Millisecond), err)
			if !errors.Is(err, otlp.ErrMetrics) || errors.Is(err, otlp.ErrDropped) || took > 2*time.Second {
				t.Errorf("Close: %v after %v, want ErrMetrics, no ErrDropped, after about 300ms", err, took)
			}
			if s := exp.Stats(); s != (otlp.Stats{}) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// A negative MetricInterval, or OTEL_METRICS_EXPORTER=none, turns the
// metric off; the records go as ever.
func TestMetricsOff(t *testing.T) {
	for _, tt := range []struct {
		name     string
		interval time.Duration
		env      string
	}{{"negative interval", -1, ""}, {"OTEL_METRICS_EXPORTER=none", 0, "none"}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OTEL_METRICS_EXPORTER", tt.env)
			col := otelcoltest.Start(t, otelcoltest.Options{})
			exp := newExporter(t, col, otlp.GRPC, otlp.Config{MetricInterval: tt.interval})
			if err := exp.Event(seqEvent(1)); err != nil {
				t.Fatal(err)
			}
			if err := closeExporter(t, exp, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			col.WaitRecords(t, 1, 10*time.Second)
			if pts, err := col.Points(); err != nil || len(pts) != 0 {
				t.Errorf("points %+v, %v; want none", pts, err)
			}
		})
	}
}

// With the endpoint in OTEL_EXPORTER_OTLP_LOGS_ENDPOINT only, the metric
// goes to the same Collector, at /v1/metrics beside /v1/logs.
func TestMetricsFollowLogsEndpoint(t *testing.T) {
	col := otelcoltest.Start(t, otelcoltest.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", col.HTTPEndpoint()+"/v1/logs")
	exp, err := otlp.New(t.Context(), otlp.Config{HostName: "gw-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := exp.Event(seqEvent(1)); err != nil {
		t.Fatal(err)
	}
	if err := closeExporter(t, exp, 10*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	col.WaitRecords(t, 1, 10*time.Second)
	checkCounter(t, col, exp.Stats())
}
