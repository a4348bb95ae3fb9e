package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestInlinedCopyFires: a probe on a function by name stops in the
// copies GCC inlined into other functions, not only at its out-of-line
// instance, and reads the copy's own arguments. In both test builds
// ngx_http_close_request has an out-of-line .isra clone and a copy
// inlined into ngx_http_terminate_handler: a client that gives up on a
// slow proxied request is finalized with 499, terminated, and closed
// through that copy. ngx_http_finalize_connection has a copy inlined at
// the end of ngx_http_finalize_request, where every plain request ends.
func TestInlinedCopyFires(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) { testInlinedCopyFires(t, v) })
	}
}

func testInlinedCopyFires(t *testing.T, variant string) {
	inst := nginxtest.Build(t, variant)
	bin, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	copyIn := func(name, caller string, line int) symbols.InlinedInstance {
		ins, err := bin.InlinedInstances(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if in.Caller == caller && in.Line == line {
				return in
			}
		}
		t.Fatalf("no copy of %s inlined into %s at line %d in nginx %s: %v", name, caller, line, variant, ins)
		return symbols.InlinedInstance{}
	}
	closeCopy := copyIn("ngx_http_close_request", "ngx_http_terminate_handler", 2770)
	finCopy := copyIn("ngx_http_finalize_connection", "ngx_http_finalize_request", 2708)
	outOfLine, err := bin.Lookup("ngx_http_close_request")
	if err != nil || len(outOfLine) != 1 {
		t.Fatalf("ngx_http_close_request: %d out-of-line instances, %v", len(outOfLine), err)
	}

	up := nginxtest.SlowUpstream(t, 3*time.Second)
	s, base := startPlain(t, inst, 1, fmt.Sprintf("        location /slow { proxy_pass http://%s; }", up))
	// Two requests first, so that the connections probed are not *1.
	for i := 0; i < 2; i++ {
		if code, _ := httpGet(t, base+"/warmup"); code != 200 {
			t.Fatalf("GET /warmup = %d", code)
		}
	}
	path := writeScript(t, "inlined.ngxp", `ngx_http_close_request { print(r->connection->number, rc) }
ngx_http_finalize_connection { print(r->connection->number) }
`)
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json", path)
	// The attach summary lists the copies where they are: in the
	// function that holds them, at their offset.
	for _, in := range []symbols.InlinedInstance{closeCopy, finCopy} {
		if where := fmt.Sprintf("%s+%#x (%s) at %#x", in.Function.Symbol, in.Offset, in.String(), in.Address); !strings.Contains(p.stderr.String(), where) {
			t.Errorf("attach summary does not list %s (%s): %s", in.String(), where, p)
		}
	}

	// A plain request ends in the copy of ngx_http_finalize_connection.
	if code, _ := httpGet(t, base+"/plain"); code != 200 {
		t.Fatalf("GET /plain = %d", code)
	}
	// nginx logs the request as it frees it, after the response.
	var plainConn int64
	for end := time.Now().Add(eventTimeout); plainConn == 0 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, e := range s.AccessEntries() {
			if strings.HasPrefix(e.Request, "GET /plain ") {
				plainConn = int64(e.Connection)
			}
		}
	}
	if plainConn == 0 {
		t.Fatalf("no GET /plain in the access log:\n%s", s.AccessLog())
	}
	fromCopy := func(probe string, in symbols.InlinedInstance, conn int64) func(Event) bool {
		return func(ev Event) bool {
			n, ok := ev.IntExpr("r->connection->number")
			return ev.Probe == probe && ev.Function == in.Function.Symbol && ok && n == conn
		}
	}
	if _, ok := waitEvent(t, p, eventTimeout, fromCopy("ngx_http_finalize_connection", finCopy, plainConn)); !ok {
		p.stop(t)
		t.Fatalf("no ngx_http_finalize_connection event from its copy in %s for connection *%d (access log): %s", finCopy.Function.Symbol, plainConn, p)
	}

	// A client that gives up on /slow is closed through the copy of
	// ngx_http_close_request in ngx_http_terminate_handler.
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
	var connNum int64
	deadline := time.Now().Add(eventTimeout)
	for connNum == 0 {
		if m := prematureClose.FindStringSubmatch(s.ErrorLog()); m != nil {
			connNum, _ = strconv.ParseInt(m[1], 10, 64)
			t.Logf("error log: %s", m[0])
		} else if time.Now().After(deadline) {
			p.stop(t)
			t.Fatalf("no \"client prematurely closed connection\" line in the error log after %v:\n%s", eventTimeout, tailLines(s.ErrorLog(), 20))
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	ev, ok := waitEvent(t, p, eventTimeout, fromCopy("ngx_http_close_request", closeCopy, connNum))
	// The access log has the 499 on the same connection once the
	// request is freed.
	var logged bool
	for end := time.Now().Add(eventTimeout); !logged && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, e := range s.AccessEntries() {
			logged = logged || strings.HasPrefix(e.Request, "GET /slow ") && e.Status == 499 && int64(e.Connection) == connNum
		}
	}
	stopProbeOK(t, p)
	if !ok {
		t.Fatalf("no ngx_http_close_request event from its copy in %s (%s) for connection *%d: %s", closeCopy.Function.Symbol, closeCopy.String(), connNum, p)
	}
	if !logged {
		t.Errorf("the access log has no 499 for GET /slow on connection *%d:\n%s", connNum, s.AccessLog())
	}
	// At that copy rc is the constant 0 of the call in
	// ngx_http_terminate_handler.
	if rc, ok := ev.IntExpr("rc"); !ok || rc != 0 {
		t.Errorf("rc at the copy = %s, want 0: %s", valueText(ev, "rc"), ev)
	}
	if !pidIn(ev.PID, s.WorkerPIDs()) {
		t.Errorf("event from pid %d, not a worker of nginx %d (workers %v)", ev.PID, s.MasterPID(), s.WorkerPIDs())
	}
	// The copy's close is the last of that connection's request: the
	// clone's, if any, came before (NGX_DONE when proxying started).
	var last Event
	for _, e := range events(t, p) {
		if n, _ := e.IntExpr("r->connection->number"); e.Probe == "ngx_http_close_request" && n == connNum {
			last = e
		}
	}
	if last.Function != closeCopy.Function.Symbol {
		t.Errorf("the last ngx_http_close_request event of connection *%d is from %s, want the copy in %s", connNum, last.Function, closeCopy.Function.Symbol)
	}
	// The other copy of ngx_http_finalize_connection in
	// ngx_http_finalize_request (rc == NGX_DONE) has lost r: it fires,
	// and its value is unavailable, with the reason.
	lost := false
	for _, e := range events(t, p) {
		v, ok := e.ByExpr("r->connection->number")
		if e.Probe == "ngx_http_finalize_connection" && e.Function == finCopy.Function.Symbol && ok && !v.Readable {
			lost = true
			if !strings.Contains(v.Why, "parameter r of ngx_http_finalize_connection inlined into ngx_http_finalize_request") || !strings.Contains(v.Why, "optimized out") {
				t.Errorf("unavailable value without its reason: %s", e)
			}
		}
	}
	if !lost {
		t.Errorf("no event from the copy of ngx_http_finalize_connection that lost r: %s", p)
	}
	sum := checkSummary(t, p)
	hits := map[string]uint64{}
	for _, ps := range sum.Probes {
		hits[ps.Probe+" "+ps.Function] += ps.Hits
	}
	if hits["ngx_http_close_request "+closeCopy.Function.Symbol] == 0 || hits["ngx_http_finalize_connection "+finCopy.Function.Symbol] == 0 {
		t.Errorf("summary has no hits of the inlined copies: %v", hits)
	}
}
