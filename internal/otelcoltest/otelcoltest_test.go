package otelcoltest

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// post sends one log record over OTLP/HTTP as JSON, as any client may:
// the harness is tested without ngxprobe's exporter.
func post(c *Collector, n int) error {
	body := fmt.Sprintf(`{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"test"}}]},
"scopeLogs":[{"scope":{"name":"otelcoltest","version":"1"},"logRecords":[{"timeUnixNano":"1700000000000000123","severityNumber":9,
"severityText":"INFO","eventName":"test.event","body":{"stringValue":"record %d"},"attributes":[
{"key":"n","value":{"intValue":"%d"}},{"key":"ok","value":{"boolValue":true}},{"key":"ratio","value":{"doubleValue":0.5}},
{"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}}},
{"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}},
{"key":"raw","value":{"bytesValue":"AAE="}}]}]}]}]}`, n, n)
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(c.HTTPEndpoint()+"/v1/logs", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/logs: %s", resp.Status)
	}
	return nil
}

func TestCollector(t *testing.T) {
	c := Start(t, Options{})
	if err := post(c, 1); err != nil {
		t.Fatal(err)
	}
	recs := c.WaitRecords(t, 1, 10*time.Second)
	want := Record{
		Resource: map[string]any{"service.name": "test"},
		Scope:    "otelcoltest", ScopeVersion: "1",
		Time:     time.Unix(0, 1700000000000000123),
		Severity: 9, SeverityText: "INFO", EventName: "test.event",
		Body: "record 1",
		Attributes: map[string]any{
			"n": int64(1), "ok": true, "ratio": 0.5,
			"list": []any{"a", int64(2)}, "map": map[string]any{"k": "v"}, "raw": []byte{0, 1},
		},
	}
	if len(recs) != 1 || !reflect.DeepEqual(recs[0], want) {
		t.Fatalf("records:\n got %+v\nwant %+v", recs, want)
	}

	// Killed, it receives nothing; up again, on the same ports, it
	// appends to the same file.
	c.Kill()
	if c.Running() {
		t.Fatal("running after Kill")
	}
	if err := post(c, 2); err == nil {
		t.Fatal("a killed collector took a record")
	}
	c.Up()
	if err := post(c, 3); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	c.Up()

	// Paused, it accepts and does not answer; resumed, it answers.
	c.Pause()
	errc := make(chan error, 1)
	go func() { errc <- post(c, 4) }()
	select {
	case err := <-errc:
		t.Fatalf("a paused collector answered: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.Resume()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	recs = c.WaitRecords(t, 3, 10*time.Second)
	var ns []int64
	for _, r := range recs {
		ns = append(ns, r.Attributes["n"].(int64))
	}
	if !reflect.DeepEqual(ns, []int64{1, 3, 4}) {
		t.Errorf("records %v, want 1, 3, 4", ns)
	}
	if !strings.Contains(c.Log(), "otelcoltest: start 3") {
		t.Errorf("collector log:\n%s", c.Log())
	}
}

func TestCollectorDown(t *testing.T) {
	c := Start(t, Options{Down: true})
	if c.Running() {
		t.Fatal("running with Down")
	}
	if err := post(c, 1); err == nil {
		t.Fatal("a collector that is down took a record")
	}
	if recs, err := c.Records(); err != nil || len(recs) != 0 {
		t.Fatalf("records %v, %v", recs, err)
	}
	c.Up()
	if err := post(c, 2); err != nil {
		t.Fatal(err)
	}
	if recs := c.WaitRecords(t, 1, 10*time.Second); recs[0].Attributes["n"] != int64(2) {
		t.Errorf("record %+v", recs[0])
	}
}

// A line cut short by a kill is not a record; a bad complete line is an
// error.
func TestParseRecords(t *testing.T) {
	line := `{"resourceLogs":[{"resource":{},"scopeLogs":[{"scope":{},"logRecords":[{"body":{"stringValue":"x"},"attributes":[{"key":"n","value":{"intValue":"7"}}]}]}]}]}`
	recs, err := ParseRecords([]byte(line + "\n" + line[:40]))
	if err != nil || len(recs) != 1 || recs[0].Attributes["n"] != int64(7) || recs[0].Body != "x" {
		t.Errorf("ParseRecords = %+v, %v", recs, err)
	}
	if _, err := ParseRecords([]byte(line[:40] + "\n")); err == nil {
		t.Error("a broken line parsed")
	}
}

// The build is cached under $NGXPROBE_CACHE, keyed by what it is made of.
func TestBuildCached(t *testing.T) {
	bin := Build(t)
	dir := filepath.Dir(bin)
	if !strings.HasPrefix(filepath.Base(dir), "otelcol-") || filepath.Dir(dir) != cacheDir() {
		t.Errorf("binary %s not in %s/otelcol-<hash>", bin, cacheDir())
	}
	for _, f := range []string{".complete", "BUILD_INFO"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goCmd, err := goTool()
	if err != nil {
		t.Fatal(err)
	}
	key, err := buildKey(root, goCmd)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "otelcol-"+key {
		t.Errorf("cache dir %s, key %s", dir, key)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "BUILD_INFO")); !bytes.Contains(b, []byte("key: "+key)) {
		t.Errorf("BUILD_INFO:\n%s", b)
	}
}

// postMetric sends one cumulative sum point over OTLP/HTTP as JSON.
func postMetric(c *Collector, outcome string, value int64, at int64) error {
	body := fmt.Sprintf(`{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"test"}}]},
"scopeMetrics":[{"scope":{"name":"otelcoltest","version":"1"},"metrics":[{"name":"test.records","unit":"{record}",
"sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"attributes":[{"key":"outcome","value":{"stringValue":%q}}],
"startTimeUnixNano":"1700000000000000000","timeUnixNano":"%d","asInt":"%d"}]}},
{"name":"test.ratio","gauge":{"dataPoints":[{"timeUnixNano":"%d","asDouble":0.25}]}}]}]}]}`, outcome, at, value, at)
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(c.HTTPEndpoint()+"/v1/metrics", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/metrics: %s", resp.Status)
	}
	return nil
}

// Metrics go to their own file; Latest finds a series' last value.
func TestMetrics(t *testing.T) {
	c := Start(t, Options{})
	const t0 = 1700000001000000000
	for i, p := range []struct {
		outcome string
		value   int64
	}{{"exported", 5}, {"dropped", 1}, {"exported", 9}, {"dropped", 3}} {
		if err := postMetric(c, p.outcome, p.value, t0+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := post(c, 1); err != nil {
		t.Fatal(err)
	}
	if recs := c.WaitRecords(t, 1, 10*time.Second); len(recs) != 1 {
		t.Errorf("%d records, want 1: a metric in the records' file?", len(recs))
	}
	p := c.WaitPoint(t, "test.records", map[string]any{"outcome": "dropped"}, func(p Point) bool { return p.Int == 3 }, 10*time.Second)
	want := Point{
		Resource: map[string]any{"service.name": "test"}, Scope: "otelcoltest", ScopeVersion: "1",
		Name: "test.records", Unit: "{record}", Kind: "sum", Monotonic: true, Temporality: "cumulative",
		Attributes: map[string]any{"outcome": "dropped"},
		Start:      time.Unix(0, 1700000000000000000), Time: time.Unix(0, t0+3),
		IsInt: true, Int: 3,
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("latest dropped:\n got %+v\nwant %+v", p, want)
	}
	if p, ok, err := c.Latest("test.records", map[string]any{"outcome": "exported"}); err != nil || !ok || p.Int != 9 || p.Value() != 9 {
		t.Errorf("latest exported: %+v, %v, %v", p, ok, err)
	}
	if s, err := c.Series("test.records", nil); err != nil || len(s) != 4 {
		t.Errorf("series: %d points, %v; want 4", len(s), err)
	}
	if p, ok, err := c.Latest("test.ratio", nil); err != nil || !ok || p.Kind != "gauge" || p.IsInt || p.Value() != 0.25 {
		t.Errorf("gauge: %+v, %v, %v", p, ok, err)
	}
	if _, ok, err := c.Latest("test.records", map[string]any{"outcome": "lost"}); err != nil || ok {
		t.Errorf("a series never sent: %v, %v", ok, err)
	}
}

// A metrics line cut short by a kill is not a point; a bad complete line
// is an error.
func TestParsePoints(t *testing.T) {
	line := `{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{},"metrics":[{"name":"m","sum":{"aggregationTemporality":1,"dataPoints":[{"asInt":"7"}]}},{"name":"h","histogram":{"dataPoints":[{"count":"1"}]}}]}]}]}`
	pts, err := ParsePoints([]byte(line + "\n" + line[:40]))
	if err != nil || len(pts) != 1 || pts[0].Name != "m" || pts[0].Int != 7 || pts[0].Temporality != "delta" || pts[0].Monotonic {
		t.Errorf("ParsePoints = %+v, %v", pts, err)
	}
	if _, err := ParsePoints([]byte(line[:40] + "\n")); err == nil {
		t.Error("a broken line parsed")
	}
}
