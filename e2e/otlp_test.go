package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/incidents"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/otelcoltest"
)

// -o otlp against a real OpenTelemetry Collector (internal/otelcoltest:
// otelcol with the OTLP receiver, writing what it receives to a file).

// otlpArgs are the flags that send to c over gRPC.
func otlpArgs(c *otelcoltest.Collector) []string {
	return []string{"-o", "otlp", "--otlp-endpoint", c.Endpoint(), "--otlp-protocol", "grpc", "--otlp-insecure"}
}

// otlpCounts reads ngxprobe's exit line "otlp: N records, X exported, Y
// dropped".
func otlpCounts(t *testing.T, p *proc) (records, exported, dropped int) {
	t.Helper()
	m := regexp.MustCompile(`ngxprobe: otlp: (\d+) records, (\d+) exported, (\d+) dropped`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no otlp counts on stderr: %s", p)
	}
	records, _ = strconv.Atoi(m[1])
	exported, _ = strconv.Atoi(m[2])
	dropped, _ = strconv.Atoi(m[3])
	return records, exported, dropped
}

// The 499 incident, exported: each event of the example is a log record
// with the probe, its values, the *N of the error and access logs, the
// peer, and the stack; the summary is a record too.
func TestOTLPExport499(t *testing.T) {
	nginxtest.RequireRoot(t)
	col := otelcoltest.Start(t, otelcoltest.Options{})
	sc := incidents.ClientAbort499(t)
	srv := nginxtest.Start(t, privateBinary(t, nginxtest.Build(t, nginxtest.VariantO2)), nginxtest.Config{HTTP: sc.HTTP})
	args := append([]string{"run", "-p", strconv.Itoa(srv.MasterPID())}, otlpArgs(col)...)
	p := startProbe(t, append(args, exampleScript(t, "client-abort-499"))...)
	res := sc.Trigger(t)
	obs := sc.Check(t, srv, res)
	conn := int(obs.Access.Connection)
	l, ok := incidents.FindLogLine(srv.ErrorLog(), sc.ExpectLog)
	if !ok || int(l.Conn) != conn {
		t.Fatalf("error log: want %q on *%d: %q", sc.ExpectLog, conn, l.Raw)
	}
	// The finalize with rc 499, as a record of *N.
	var got otelcoltest.Record
	if !waitUntil(eventTimeout, func() bool {
		recs, _ := col.Records()
		for _, r := range recs {
			if r.EventName == "ngxprobe.event" && r.Attributes["code.function"] == "ngx_http_finalize_request" && fmt.Sprint(r.Attributes["nginx.connection.number"]) == strconv.Itoa(conn) {
				got = r
				return true
			}
		}
		return false
	}) {
		recs, _ := col.Records()
		t.Fatalf("no record of ngx_http_finalize_request for *%d among %d records: %s", conn, len(recs), p)
	}
	stopProbeOK(t, p)
	t.Logf("record: %v\nresource: %v", got.Attributes, got.Resource)
	for key, want := range map[string]string{
		"ngxprobe.probe":          "ngx_http_finalize_request",
		"nginx.connection.number": strconv.Itoa(conn),
		"network.peer.address":    "127.0.0.1",
	} {
		if v := fmt.Sprint(got.Attributes[key]); v != want {
			t.Errorf("attribute %s = %q, want %q", key, v, want)
		}
	}
	if !strings.Contains(fmt.Sprint(got.Attributes), "499") {
		t.Errorf("the record does not carry rc 499: %v", got.Attributes)
	}
	if st := fmt.Sprint(got.Attributes["code.stacktrace"]); !strings.Contains(st, "ngx_http_finalize_request") {
		t.Errorf("code.stacktrace %q lacks the probed function", st)
	}
	for key, want := range map[string]string{"service.name": "nginx", "process.pid": strconv.Itoa(srv.MasterPID())} {
		if v := fmt.Sprint(got.Resource[key]); v != want {
			t.Errorf("resource %s = %q, want %q", key, v, want)
		}
	}
	// Every record made it, the summary last.
	records, exported, dropped := otlpCounts(t, p)
	recs := col.WaitRecords(t, exported, eventTimeout)
	if dropped != 0 || exported != records || len(recs) != exported {
		t.Errorf("records %d, exported %d, dropped %d; the Collector has %d", records, exported, dropped, len(recs))
	}
	if last := recs[len(recs)-1]; last.EventName != "ngxprobe.summary" {
		t.Errorf("last record %q, want the summary", last.EventName)
	}
	// And the counts as a metric, exported last at exit.
	for outcome, want := range map[string]int{"exported": exported, "dropped": dropped} {
		pt, ok, err := col.Latest("ngxprobe.otlp.records", map[string]any{"outcome": outcome})
		if err != nil || !ok || int(pt.Value()) != want {
			t.Errorf("metric ngxprobe.otlp.records{outcome=%s} = %v (%v, %v), want %d", outcome, pt.Value(), ok, err, want)
		}
	}
}

// A Collector down when ngxprobe starts, then up, then killed: nginx
// never waits on it, records made while it is down are dropped and
// counted, and the ones after it is up arrive.
func TestOTLPCollectorDown(t *testing.T) {
	nginxtest.RequireRoot(t)
	col := otelcoltest.Start(t, otelcoltest.Options{Down: true})
	srv, base := startPlain(t, privateBinary(t, nginxtest.Build(t, nginxtest.VariantO2)), 1, "")
	args := append([]string{"run", "-p", strconv.Itoa(srv.MasterPID())}, otlpArgs(col)...)
	p := startProbe(t, append(args, "-e", `ngx_http_finalize_request { print(rc, c = r->connection->number) }`)...)
	served := func(n int) time.Duration {
		start := time.Now()
		for range n {
			checkServes(t, base)
		}
		return time.Since(start) / time.Duration(n)
	}
	down := served(200)
	col.Up()
	time.Sleep(3 * time.Second) // gRPC reconnects within its 2 s backoff
	up := served(200)
	col.Kill()
	killed := served(100)
	stopProbeOK(t, p)
	t.Logf("per request: %v with the Collector down, %v up, %v killed", down, up, killed)
	records, exported, dropped := otlpCounts(t, p)
	recs, _ := col.Records()
	t.Logf("%d records: %d exported, %d dropped; the Collector wrote %d", records, exported, dropped, len(recs))
	if exported+dropped != records || dropped == 0 || exported < 200 {
		t.Errorf("records %d = exported %d + dropped %d? want drops while down and the 200 requests while up exported", records, exported, dropped)
	}
	if len(recs) != exported {
		t.Errorf("the Collector has %d records, ngxprobe says it exported %d", len(recs), exported)
	}

	checkNoPanic(t, p)
}
