package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

const (
	finalizeProbe = "ngx_http_finalize_request"
	recvRetProbe  = "ngx_unix_recv%return"

	exprRC      = "rc"
	exprConn    = "r->connection->number"
	exprEOF     = "r->connection->read->eof"
	exprReqLine = "r->request_line"
	exprStatus  = "r->headers_out.status"
)

var variants = []string{nginxtest.VariantO2, nginxtest.VariantLTO}

// prematureClose matches the info-level error-log line of a client that
// went away while nginx waited for the upstream, capturing the *N.
var prematureClose = regexp.MustCompile(`(?m)^\S+ \S+ \[info\] \d+#\d+: \*(\d+) .*client prematurely closed connection.*$`)

// TestClientAbort499: a client gives up on a slow proxied request; the
// finalize event shows rc 499, the client read event's eof set, and the
// connection number nginx logged.
func TestClientAbort499(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) { testClientAbort499(t, v) })
	}
}

func testClientAbort499(t *testing.T, variant string) {
	inst := nginxtest.Build(t, variant)
	up := nginxtest.SlowUpstream(t, 3*time.Second)
	s, base := startPlain(t, inst, 1, fmt.Sprintf("        location /slow { proxy_pass http://%s; }", up))
	// Two requests first, so the aborted one is not connection *1 and a
	// wrong read (or the upstream connection's number) can't pass.
	for i := 0; i < 2; i++ {
		if code, _ := httpGet(t, base+"/warmup"); code != 200 {
			t.Fatalf("GET /warmup = %d", code)
		}
	}
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json")

	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := client.Get(base + "/slow")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET /slow answered %s within the 1 s client timeout; the upstream should take 3 s", resp.Status)
	}
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("GET /slow: want a client timeout, got %v", err)
	}
	client.CloseIdleConnections()

	// nginx notices the closed client connection (EPOLLRDHUP) and logs it.
	var logLine string
	var connNum int64
	deadline := time.Now().Add(eventTimeout)
	for {
		if m := prematureClose.FindStringSubmatch(s.ErrorLog()); m != nil {
			logLine = m[0]
			connNum, _ = strconv.ParseInt(m[1], 10, 64)
			break
		}
		if time.Now().After(deadline) {
			p.stop(t)
			t.Fatalf("no \"client prematurely closed connection\" line in the error log after %v:\n%s", eventTimeout, tailLines(s.ErrorLog(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("error log: %s", logLine)
	if connNum < 3 {
		t.Errorf("error log line names connection *%d; after two requests it should be *3 or later", connNum)
	}

	// Let the event reach ngxprobe's output before interrupting it.
	is499 := func(ev Event) bool {
		rc, ok := ev.IntExpr(exprRC)
		return ev.Probe == finalizeProbe && ok && rc == 499
	}
	_, seen := waitEvent(t, p, eventTimeout, is499)
	stopProbeOK(t, p)
	if !seen {
		t.Fatalf("no %s event with rc 499 within %v: %s", finalizeProbe, eventTimeout, p)
	}

	var found []Event
	for _, ev := range events(t, p) {
		if is499(ev) {
			found = append(found, ev)
		}
	}
	if len(found) != 1 {
		t.Errorf("%d finalize events with rc 499, want 1", len(found))
	}
	ev := found[0]
	t.Logf("499 event: pid %d rc 499 conn %s eof %s", ev.PID, valueText(ev, exprConn), valueText(ev, exprEOF))
	if eof, ok := ev.ByExpr(exprEOF); !ok || !eof.Readable {
		t.Errorf("499 event: %s missing or unreadable: %+v", exprEOF, eof)
	} else if n, _ := eof.Int(); n != 1 {
		t.Errorf("499 event: %s = %s, want 1", exprEOF, eof.Value)
	}
	if conn, ok := ev.IntExpr(exprConn); !ok || conn != connNum {
		v, _ := ev.ByExpr(exprConn)
		t.Errorf("499 event: %s = %s (readable %v), want %d from the error log line %q", exprConn, v.Value, v.Readable, connNum, logLine)
	}
	if !pidIn(ev.PID, s.WorkerPIDs()) {
		t.Errorf("499 event from pid %d, not a worker of nginx %d (workers %v)", ev.PID, s.MasterPID(), s.WorkerPIDs())
	}
	checkSummary(t, p)
}

// TestReloadKeepsTracing: attached to the master, ngxprobe also traces the
// workers a reload starts.
func TestReloadKeepsTracing(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	// 410s are events of the default set; healthy 200s are only counted.
	s, base := startPlain(t, inst, 2, `        location /gone/ { return 410; }`)
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json")

	requestSeen := func(path string) func(Event) bool {
		want := "GET " + path + " HTTP/1.1"
		return func(ev Event) bool {
			rl, _ := ev.StrExpr(exprReqLine)
			return ev.Probe == finalizeProbe && rl == want
		}
	}
	// Tracing works before the reload.
	old := s.WorkerPIDs()
	if code, _ := httpGet(t, base+"/gone/before-reload"); code != 410 {
		t.Fatalf("GET /gone/before-reload = %d", code)
	}
	if ev, ok := waitEvent(t, p, eventTimeout, requestSeen("/gone/before-reload")); !ok {
		p.stop(t)
		t.Fatalf("no finalize event for /before-reload: %s", p)
	} else if !pidIn(ev.PID, old) {
		t.Errorf("/before-reload event from pid %d, workers are %v", ev.PID, old)
	}

	s.Reload(t)
	fresh := s.WorkerPIDs()
	t.Logf("workers before reload %v, after %v", old, fresh)
	for _, pid := range fresh {
		if pidIn(pid, old) {
			t.Fatalf("worker %d survived the reload (old %v, new %v)", pid, old, fresh)
		}
	}
	if code, _ := httpGet(t, base+"/gone/after-reload"); code != 410 {
		t.Fatalf("GET /gone/after-reload = %d", code)
	}
	ev, ok := waitEvent(t, p, eventTimeout, requestSeen("/gone/after-reload"))
	stopProbeOK(t, p)
	if !ok {
		t.Fatalf("no finalize event for /after-reload from the new workers %v: %s", fresh, p)
	}
	if !pidIn(ev.PID, fresh) || pidIn(ev.PID, old) {
		t.Errorf("/after-reload event from pid %d: want one of the new workers %v (old were %v)", ev.PID, fresh, old)
	}
	for _, e := range s.AccessEntries() {
		if e.Request == "GET /gone/after-reload HTTP/1.1" && e.PID != ev.PID {
			t.Errorf("access log: /after-reload served by pid %d, event says %d", e.PID, ev.PID)
		}
	}
	checkSummary(t, p)
}

// TestUnixRecvReturn: a read that hits EOF is an ngx_unix_recv%return
// event with $retval 0, the buffer size saved at entry, and the
// connection of the request; the reads that returned data are dropped by
// the filter in the kernel and counted as hits, not printed.
func TestUnixRecvReturn(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) { testUnixRecvReturn(t, v) })
	}
}

func testUnixRecvReturn(t *testing.T, variant string) {
	inst := nginxtest.Build(t, variant)
	s, base := startPlain(t, inst, 1, "")
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json")
	// A keepalive request, then the client's FIN: nginx's next read on the
	// idle connection returns 0.
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET /recv HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "200 OK") {
		t.Fatalf("GET /recv: %q, %v", buf[:n], err)
	}
	c.Close()
	var conn int64
	for deadline := time.Now().Add(eventTimeout); conn == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range s.AccessEntries() {
			if e.Request == "GET /recv HTTP/1.1" {
				conn = int64(e.Connection)
			}
		}
	}
	ev, ok := waitEvent(t, p, eventTimeout, func(ev Event) bool {
		n, _ := ev.IntExpr("c->number")
		return ev.Probe == recvRetProbe && n == conn
	})
	stopProbeOK(t, p)
	if !ok {
		t.Fatalf("no %s event for the EOF on *%d: %s", recvRetProbe, conn, p)
	}
	if ret, ok := ev.IntExpr("$retval"); !ok || ret != 0 {
		t.Errorf("recv event: $retval = %d (readable %v), want 0 (EOF): %s", ret, ok, ev)
	}
	if size, ok := ev.IntExpr("size"); !ok || size <= 0 {
		t.Errorf("recv event of connection %d: size = %v (readable %v), want > 0 (saved at entry): %s", conn, size, ok, ev)
	}
	for _, e := range events(t, p) {
		if ret, ok := e.IntExpr("$retval"); e.Probe == recvRetProbe && ok && ret != 0 && ret != -1 {
			t.Errorf("a healthy read was printed: %s", e)
		}
		if e.Probe == finalizeProbe {
			t.Errorf("a healthy request was printed: %s", e)
		}
	}
	// The healthy request and its read were hits the filters dropped.
	sum := summary(t, p)
	for _, ps := range sum.Probes {
		if (ps.Probe == finalizeProbe || ps.Probe == recvRetProbe) && ps.Hits <= ps.Events {
			t.Errorf("%s: hits %d, events %d: want the healthy hits counted and dropped", ps.Probe, ps.Hits, ps.Events)
		}
	}
	checkSummary(t, p)
}

// TestCustomProbe: --probe with expressions prints their values; a
// char-array/ngx_str_t such as r->request_line comes out as a string.
func TestCustomProbe(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, "")
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json",
		"--probe", finalizeProbe+":"+exprStatus+","+exprReqLine)
	if code, _ := httpGet(t, base+"/custom?x=1"); code != 200 {
		t.Fatalf("GET /custom?x=1 = %d", code)
	}
	const want = "GET /custom?x=1 HTTP/1.1"
	ev, ok := waitEvent(t, p, eventTimeout, func(ev Event) bool {
		rl, _ := ev.StrExpr(exprReqLine)
		return ev.Probe == finalizeProbe && rl == want
	})
	stopProbeOK(t, p)
	if !ok {
		t.Fatalf("no finalize event whose %s is the string %q: %s", exprReqLine, want, p)
	}
	if len(ev.Values) != 2 || ev.Values[0].Expr != exprStatus || ev.Values[1].Expr != exprReqLine {
		t.Errorf("custom event values: want exactly [%s %s] in that order: %s", exprStatus, exprReqLine, ev)
	}
	for _, v := range ev.Values {
		if v.Name != v.Expr {
			t.Errorf("custom value %q: name %q, want the expression", v.Expr, v.Name)
		}
	}
	if st, ok := ev.IntExpr(exprStatus); !ok || st != 200 {
		t.Errorf("%s = %v (readable %v), want 200: %s", exprStatus, st, ok, ev)
	}
	for _, e := range events(t, p) {
		if e.Probe != finalizeProbe {
			t.Errorf("event of probe %q; only %s was asked for: %s", e.Probe, finalizeProbe, e)
		}
	}
	if strings.Contains(p.stderr.String(), "ngx_unix_recv") {
		t.Errorf("custom probe set also attached the default set: %s", p)
	}
	checkSummary(t, p)
}

// valueText is expr's JSON value, or "?" when absent or unreadable.
func valueText(ev Event, expr string) string {
	v, ok := ev.ByExpr(expr)
	if !ok || !v.Readable {
		return "?"
	}
	return string(v.Value)
}
