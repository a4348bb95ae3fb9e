package closes

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
)

// ev makes an event of the probe set: values are group, name, data
// triples in order, the first group naming the probe.
func ev(at time.Time, vals ...any) output.Event {
	e := output.Event{Time: at, PID: 7}
	for i := 0; i+2 < len(vals); i += 3 {
		e.Values = append(e.Values, output.Value{Group: vals[i].(string), Name: vals[i+1].(string), Data: vals[i+2], Readable: true})
	}
	return e
}

var t0 = time.Date(2026, 11, 30, 11, 2, 3, 0, time.UTC)

func TestUpstreamErrorJoinsItsClient(t *testing.T) {
	e := &Engine{}
	// The upstream connection *8 reports a reset; its log is the client's
	// *7; then ngx_http_upstream_next decides.
	if vs := e.Add(ev(t0, "error", "conn", int64(8), "error", "log", int64(7), "error", "err", int64(104), "error", "text", "recv() failed")); vs != nil {
		t.Fatalf("a verdict before the incident ended: %+v", vs)
	}
	e.Add(ev(t0, "next", "ft_type", int64(ftError), "next", "conn", int64(7), "next", "uconn", int64(8), "next", "peer", "127.0.0.1:8080",
		"next", "request_sent", int64(1), "next", "method", "GET", "next", "uri", "/upload"))
	if vs := e.Flush(t0.Add(DefaultQuiet/2), false); len(vs) != 0 {
		t.Fatalf("flushed before the quiet period: %+v", vs)
	}
	vs := e.Flush(t0.Add(DefaultQuiet), false)
	if len(vs) != 1 {
		t.Fatalf("%d verdicts, want 1", len(vs))
	}
	v := vs[0]
	if v.Conn != 7 || v.PeerConn != 8 || v.Side != Upstream || v.Cause != CauseRST || v.Errno != 104 || v.Status != 502 || v.Method != "GET" {
		t.Errorf("verdict %+v", v)
	}
	if !strings.Contains(v.Summary, "RST") {
		t.Errorf("summary %q", v.Summary)
	}
	if e.Verdicts() != 1 {
		t.Errorf("Verdicts() = %d", e.Verdicts())
	}
}

func TestCloseEndsTheIncident(t *testing.T) {
	e := &Engine{Symbolize: func(pid uint32, addr uint64) string {
		if addr == 0x1000 {
			return "ngx_http_process_request_headers.isra.0"
		}
		return ""
	}}
	vs := e.Add(ev(t0, "close", "conn", int64(4), "close", "client", "203.0.113.7", "close", "timedout", int64(1), "close", "rh", output.Pointer(0x1000),
		"close read", "timedout", int64(1)))
	if len(vs) != 1 {
		t.Fatalf("%d verdicts at the close, want 1", len(vs))
	}
	v := vs[0]
	if v.Cause != CauseTimeout || v.Phase != PhaseRequestHeader || v.Peer != "203.0.113.7" || v.Status != 408 {
		t.Errorf("verdict %+v", v)
	}
	// Nothing is left pending.
	if vs := e.Flush(t0.Add(time.Hour), true); len(vs) != 0 {
		t.Errorf("left pending: %+v", vs)
	}
}

func TestLingeringCloseIsHealthy(t *testing.T) {
	e := &Engine{Symbolize: func(uint32, uint64) string { return "ngx_http_lingering_close_handler" }}
	if vs := e.Add(ev(t0, "close", "conn", int64(9), "close", "rh", output.Pointer(0x2000), "close read", "eof", int64(1))); len(vs) != 0 {
		t.Fatalf("a verdict for a lingering close: %+v", vs)
	}
	agg := &output.Aggregate{Name: HealthyAggregation, Rows: []output.AggregateRow{
		{Keys: []output.Key{{Readable: true, Data: int64(1)}, {Readable: true, Data: int64(0)}, {Readable: true, Data: int64(1)}}, Count: 3},
		{Keys: []output.Key{{Readable: true, Data: int64(0)}, {Readable: true, Data: int64(0)}, {Readable: true, Data: int64(0)}}, Count: 5},
	}}
	got := map[string]uint64{}
	for _, h := range e.Healthy(agg, nil) {
		got[h.Kind] = h.Count
	}
	want := map[string]uint64{HealthyLingering: 1, HealthyKeepaliveTimeout: 3, HealthyAfterResponse: 5}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("healthy %v, want %v", got, want)
			break
		}
	}
}

func TestDecidedSkipsMachinery(t *testing.T) {
	st := &output.Stack{Frames: []output.Frame{
		{Symbol: "ngx_http_terminate_request"},
		{Symbol: "ngx_http_finalize_request"},
		{Symbol: "ngx_http_upstream_check_broken_connection", File: "src/http/ngx_http_upstream.c", Line: 1505},
		{Symbol: "ngx_http_request_handler"},
	}}
	f, via := decided(st)
	if f == nil || f.Symbol != "ngx_http_upstream_check_broken_connection" || via != "ngx_http_request_handler" {
		t.Errorf("decided = %+v, %q", f, via)
	}
}

func TestLogFormatShown(t *testing.T) {
	l := ev(t0, "log", "fmt", `limiting requests%s, excess: %ui.%03ui by zone "%V"`, "log", "action", "")
	if got, want := logText(l), `limiting requests…, excess: ….… by zone "…"`; got != want {
		t.Errorf("logText = %q, want %q", got, want)
	}
}

// The strongest evidence wins: a limit_req line over a close that looks
// healthy (lingering), a 499 over the upstream failure before it, and a
// failed try that nginx retries claims no status.
func TestEvidenceOrder(t *testing.T) {
	lingering := func(uint32, uint64) string { return "ngx_http_lingering_close_handler" }
	e := &Engine{Symbolize: lingering}
	e.Add(ev(t0, "log", "conn", int64(5), "log", "fmt", "limiting requests%s, excess: %ui.%03ui by zone \"%V\""))
	vs := e.Add(ev(t0, "close", "conn", int64(5), "close", "rh", output.Pointer(0x10), "close read", "eof", int64(1)))
	if len(vs) != 1 || vs[0].Cause != CauseLimitReq {
		t.Errorf("limit_req then a lingering close: %+v", vs)
	}

	e = &Engine{}
	e.Add(ev(t0, "next", "ft_type", int64(ftTimeout), "next", "conn", int64(9), "next", "uconn", int64(10), "next", "tries", int64(1)))
	e.Add(ev(t0, "terminate", "rc", int64(499), "terminate", "conn", int64(9)))
	vs = e.Add(ev(t0, "close", "conn", int64(9), "close", "error", int64(1), "close read", "eof", int64(1)))
	if len(vs) != 1 || vs[0].Initiator != Client || vs[0].Status != 499 {
		t.Errorf("an upstream timeout, then the client gave up: %+v", vs)
	}

	e = &Engine{}
	e.Add(ev(t0, "next", "ft_type", int64(ftError), "next", "conn", int64(11), "next", "uconn", int64(12), "next", "tries", int64(2),
		"next", "next_upstream", int64(ftError|ftTimeout), "next peer", "eof", int64(1)))
	vs = e.Flush(t0.Add(time.Hour), true)
	if len(vs) != 1 || vs[0].Status != 0 || !strings.Contains(vs[0].Summary, "next upstream") {
		t.Errorf("a try nginx retries: %+v", vs)
	}
}

// A tunnel's end: the backend's FIN is a verdict (its client connection's
// close, with no flag set, the kernel counts by its kind); a tunnel the
// client closed is healthy.
func TestTunnelEnds(t *testing.T) {
	e := &Engine{}
	tunnel := func(conn, uconn int64, clientEOF, upstreamEOF int64) output.Event {
		return ev(t0, "tunnel", "conn", conn, "tunnel", "uconn", uconn, "tunnel", "client", "203.0.113.7", "tunnel", "peer", "127.0.0.1:9001",
			"tunnel", "method", "GET", "tunnel", "uri", "/ws", "tunnel", "status", int64(101),
			"tunnel client", "eof", clientEOF, "tunnel upstream", "eof", upstreamEOF)
	}
	e.Add(tunnel(3, 4, 0, 1))
	vs := e.Flush(t0.Add(DefaultQuiet), false)
	if len(vs) != 1 {
		t.Fatalf("%d verdicts for a backend's FIN, want 1", len(vs))
	}
	v := vs[0]
	if v.Conn != 3 || v.PeerConn != 4 || v.Side != Upstream || v.Initiator != Upstream || v.Cause != CauseFIN || v.Phase != PhaseTunnel || v.Status != 101 || v.Peer != "127.0.0.1:9001" {
		t.Errorf("verdict %+v", v)
	}
	// The client closes the next tunnel: its close event (eof) ends it.
	e.Add(tunnel(5, 6, 1, 0))
	if vs := e.Add(ev(t0, "close", "conn", int64(5), "close read", "eof", int64(1))); len(vs) != 0 {
		t.Errorf("a verdict for a tunnel the client closed: %+v", vs)
	}
	kernel := &output.Aggregate{Rows: []output.AggregateRow{{Keys: []output.Key{{Data: int64(0)}, {Data: int64(0)}, {Data: int64(0)}}, Count: 10}}}
	got := map[string]uint64{}
	for _, h := range e.Healthy(kernel, nil) {
		got[h.Kind] = h.Count
	}
	if got[HealthyTunnelClosed] != 1 || got[HealthyAfterResponse] != 10 {
		t.Errorf("healthy %v: want 1 %s and the kernel's 10 %s", got, HealthyTunnelClosed, HealthyAfterResponse)
	}
}

// A client's GOAWAY names the HTTP/2 connection's end: with an error it is
// a verdict, without one healthy; a payload the buffer did not hold yet
// (nginx saves the partial frame) is not read as an error code.
func TestH2Goaway(t *testing.T) {
	e := &Engine{Symbolize: func(uint32, uint64) string { return "ngx_http_v2_read_handler" }}
	goaway := func(conn int64, avail uint64, code byte) output.Event {
		return ev(t0, "h2 goaway", "conn", conn, "h2 goaway", "pos", uint64(0x1000), "h2 goaway", "end", uint64(0x1000)+avail,
			"h2 goaway", "e0", uint64(0), "h2 goaway", "e1", uint64(0), "h2 goaway", "e2", uint64(0), "h2 goaway", "e3", uint64(code))
	}
	closeOf := func(conn int64) output.Event {
		return ev(t0, "close", "conn", conn, "close", "error", int64(1), "close", "rh", output.Pointer(0x2000), "close read", "eof", int64(1))
	}
	e.Add(goaway(1, 8, 1))
	vs := e.Add(closeOf(1))
	if len(vs) != 1 || vs[0].Cause != CauseH2Goaway || vs[0].Initiator != Client || !strings.Contains(vs[0].Summary, "PROTOCOL_ERROR") {
		t.Fatalf("GOAWAY(PROTOCOL_ERROR): %+v", vs)
	}
	e.Add(goaway(2, 8, 0))
	e.Add(goaway(3, 4, 1)) // split: the code's bytes are not in the buffer
	for _, conn := range []int64{2, 3} {
		if vs := e.Add(closeOf(conn)); len(vs) != 0 {
			t.Errorf("*%d: %+v, want healthy", conn, vs)
		}
	}
	got := map[string]uint64{}
	for _, h := range e.Healthy(nil, nil) {
		got[h.Kind] = h.Count
	}
	if got[HealthyH2ClientGoaway] != 1 || got[HealthyKeepaliveClosed] != 1 {
		t.Errorf("healthy %v: want one %s and one %s", got, HealthyH2ClientGoaway, HealthyKeepaliveClosed)
	}
}

// With All, every healthy close is a verdict marked healthy, named by the
// kind the kernel would have counted it as; the counts are the same as
// the kernel's without it, and Verdicts counts the abnormal ones only.
func TestAllMakesHealthyVerdicts(t *testing.T) {
	healthy := func(conn, idle, eof, timedout, requests int64) output.Event {
		return ev(t0, "healthy", "conn", conn, "healthy", "client", "203.0.113.7", "healthy", "idle", idle, "healthy", "eof", eof,
			"healthy", "timedout", timedout, "healthy", "requests", requests, "healthy", "rh", output.Pointer(0x10))
	}
	type connClose struct {
		conn, idle, eof, timedout, requests int64
		kind, initiator                     string
	}
	closes := []connClose{
		{1, 1, 0, 1, 3, HealthyKeepaliveTimeout, Nginx},
		{2, 1, 1, 0, 1, HealthyKeepaliveClosed, Client},
		{3, 0, 0, 0, 1, HealthyAfterResponse, Nginx},
		{4, 0, 0, 0, 100, HealthyKeepaliveLimit, Nginx},
		{5, 1, 0, 0, 2, HealthyIdleClosed, Nginx},
		// Two abnormal incidents whose client connection then closed with
		// no flag set: a tunnel the backend ended, and a 502 answered
		// with Connection: close. Each is one abnormal verdict; its close
		// is counted by its kind, as the kernel counts it.
		{6, 0, 0, 0, 1, HealthyAfterResponse, ""},
		{8, 0, 0, 0, 2, HealthyKeepaliveLimit, ""},
	}
	tunnel := ev(t0, "tunnel", "conn", int64(6), "tunnel", "uconn", int64(7), "tunnel upstream", "eof", int64(1))
	next := ev(t0, "next", "ft_type", int64(ftError), "next", "conn", int64(8), "next", "uconn", int64(9), "next", "tries", int64(1),
		"next", "request_sent", int64(1), "next peer", "eof", int64(1))

	// Without All: the kernel's aggregations count every close above.
	plain := &Engine{}
	plain.Add(tunnel)
	plain.Add(next)
	if vs := plain.Flush(t0.Add(time.Hour), true); len(vs) != 2 {
		t.Fatalf("without All: %d verdicts, want the tunnel's and the 502's: %+v", len(vs), vs)
	}
	agg, limit := &output.Aggregate{}, &output.Aggregate{}
	bit := func(b int64) output.Key { return output.Key{Readable: true, Data: b} }
	for _, c := range closes {
		if c.idle == 0 && c.requests > 1 {
			limit.Rows = append(limit.Rows, output.AggregateRow{Count: 1})
			continue
		}
		agg.Rows = append(agg.Rows, output.AggregateRow{Keys: []output.Key{bit(c.idle), bit(c.eof), bit(c.timedout)}, Count: 1})
	}

	// With All: the same closes as events.
	all := &Engine{All: true, Symbolize: func(uint32, uint64) string { return "ngx_http_keepalive_handler" }}
	all.Add(tunnel)
	all.Add(next)
	for _, c := range closes {
		vs := all.Add(healthy(c.conn, c.idle, c.eof, c.timedout, c.requests))
		if len(vs) != 1 {
			t.Fatalf("*%d: %d verdicts, want 1", c.conn, len(vs))
		}
		v := vs[0]
		if c.initiator == "" {
			if v.Healthy || v.Initiator == "" || v.Cause == c.kind {
				t.Errorf("*%d: %+v, want the abnormal verdict its close ended", c.conn, v)
			}
			continue
		}
		if !v.Healthy || v.Cause != c.kind || v.Initiator != c.initiator || v.Peer != "203.0.113.7" || v.Phase != PhaseIdle || v.Summary == "" {
			t.Errorf("*%d %s: verdict %+v", c.conn, c.kind, v)
		}
		if v.DecidedAt == nil || v.DecidedAt.Symbol != "ngx_http_keepalive_handler" {
			t.Errorf("*%d %s: decided at %+v, want the event handler", c.conn, c.kind, v.DecidedAt)
		}
	}
	counts := func(hs []output.HealthyCount) string {
		m := map[string]uint64{}
		for _, h := range hs {
			m[h.Kind] += h.Count
		}
		return fmt.Sprint(m)
	}
	if p, a := counts(plain.Healthy(agg, limit)), counts(all.Healthy(nil, nil)); p != a || !strings.Contains(p, HealthyAfterResponse+":2") {
		t.Errorf("healthy counts: %s without All, %s with it; want the same, with 2 %s", p, a, HealthyAfterResponse)
	}
	if plain.Verdicts() != 2 || all.Verdicts() != 2 {
		t.Errorf("Verdicts() = %d without All, %d with it; want 2 (the tunnel, the 502)", plain.Verdicts(), all.Verdicts())
	}
}

// Past MaxPending, the incident whose last event came longest ago is
// explained at once; Flush takes the quiet ones only, oldest first.
func TestPendingOldestFirst(t *testing.T) {
	e := &Engine{}
	errorOf := func(at time.Time, conn int64) output.Event {
		return ev(at, "error", "conn", conn, "error", "log", conn, "error", "err", int64(104), "error", "text", "recv() failed")
	}
	for i := range MaxPending {
		if vs := e.Add(errorOf(t0.Add(time.Duration(i)*time.Microsecond), int64(i+1))); len(vs) != 0 {
			t.Fatalf("a verdict at %d pending: %+v", i, vs)
		}
	}
	// *1 has a second event: *2 is now the oldest.
	e.Add(errorOf(t0.Add(time.Second), 1))
	vs := e.Add(errorOf(t0.Add(time.Second), int64(MaxPending+1)))
	if len(vs) != 1 || vs[0].Conn != 2 {
		t.Fatalf("past MaxPending: %+v, want the verdict of *2", vs)
	}
	vs = e.Flush(t0.Add(time.Second+DefaultQuiet/2), false)
	if len(vs) != MaxPending-2 || vs[0].Conn != 3 || vs[len(vs)-1].Conn != MaxPending {
		t.Fatalf("Flush: %d verdicts (first *%d), want the %d quiet ones from *3", len(vs), vs[0].Conn, MaxPending-2)
	}
	vs = e.Flush(t0.Add(time.Hour), true)
	if len(vs) != 2 || vs[0].Conn != 1 || vs[1].Conn != MaxPending+1 {
		t.Fatalf("the last Flush: %+v, want *1 and *%d", vs, MaxPending+1)
	}
}

// BenchmarkAddPastMaxPending: an event for a new connection while
// MaxPending incidents wait (a storm of 502s on connections that live
// on), each explaining the oldest.
//
//	go test ./closes -run '^$' -bench AddPastMaxPending
func BenchmarkAddPastMaxPending(b *testing.B) {
	e := &Engine{}
	errorOf := func(conn int64) output.Event {
		return ev(t0, "error", "conn", conn, "error", "log", conn, "error", "err", int64(104), "error", "text", "recv() failed")
	}
	for i := range MaxPending {
		e.Add(errorOf(int64(i + 1)))
	}
	conn := int64(MaxPending)
	for b.Loop() {
		conn++
		if len(e.Add(errorOf(conn))) != 1 {
			b.Fatal("no verdict for the oldest")
		}
	}
}

// A client's GOAWAY waits for its connection's close past the quiet
// period (the client may finish its streams first), up to MaxGoawayWait.
func TestGoawayWaitsForItsClose(t *testing.T) {
	e := &Engine{Symbolize: func(uint32, uint64) string { return "ngx_http_v2_read_handler" }}
	goaway := func(conn int64) output.Event {
		return ev(t0, "h2 goaway", "conn", conn, "h2 goaway", "pos", uint64(0x1000), "h2 goaway", "end", uint64(0x1008),
			"h2 goaway", "e0", uint64(0), "h2 goaway", "e1", uint64(0), "h2 goaway", "e2", uint64(0), "h2 goaway", "e3", uint64(2))
	}
	e.Add(goaway(1))
	e.Add(goaway(2))
	if vs := e.Flush(t0.Add(10*time.Second), false); len(vs) != 0 {
		t.Fatalf("flushed a GOAWAY before its close: %+v", vs)
	}
	closeAt := ev(t0.Add(10*time.Second), "close", "conn", int64(1), "close", "error", int64(1), "close", "rh", output.Pointer(0x2000), "close read", "eof", int64(1))
	vs := e.Add(closeAt)
	if len(vs) != 1 || vs[0].Cause != CauseH2Goaway || !strings.Contains(vs[0].Summary, "INTERNAL_ERROR") {
		t.Fatalf("GOAWAY(INTERNAL_ERROR), then the close 10 s later: %+v", vs)
	}
	// *2 never closes: past MaxGoawayWait it waits no more (and, with
	// nothing else, has no verdict).
	e.Flush(t0.Add(MaxGoawayWait+time.Second), false)
	if len(e.pending) != 0 || e.byArrival.Len() != 0 {
		t.Errorf("after MaxGoawayWait: %d pending, %d listed", len(e.pending), e.byArrival.Len())
	}
}
