package otlp

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"

	"github.com/ngxprobe/ngxprobe/internal/output"
)

var at = time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.UTC)

// attrMap is a record's attributes by key, as their Go values; a key
// given twice fails the test.
func attrMap(t *testing.T, kvs []attribute.KeyValue) map[string]any {
	t.Helper()
	m := map[string]any{}
	for _, kv := range kvs {
		if _, dup := m[string(kv.Key)]; dup {
			t.Errorf("attribute %s twice", kv.Key)
		}
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func val(group, name, expr string, data any, text string) output.Value {
	return output.Value{Name: name, Expr: expr, Group: group, Readable: true, Data: data, Text: text}
}

func conn(group, expr string, n int64) output.Value {
	v := val(group, "conn", expr, n, fmt.Sprint(n))
	v.Display = output.Connection
	return v
}

func unreadable(group, name, expr string) output.Value {
	return output.Value{Name: name, Expr: expr, Group: group, Why: "fault at 0x10", Text: "?"}
}

// finalize is an event of the default probe of ngx_http_finalize_request
// for a 499: the client closed, no upstream yet.
func finalize() output.Event {
	role := val("client", "role", "r->connection->listening", "client", "client")
	role.Display = output.Role
	hidden := val("request", "uri", "r->uri", "/x", `"/x"`)
	hidden.Hidden = true
	return output.Event{
		Time: at, PID: 4242, TID: 4242,
		Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request",
		Values: []output.Value{
			val("request", "rc", "rc", int64(499), "499"),
			val("request", "status", "r->headers_out.status", uint64(0), "0"),
			val("request", "client", "r->connection->addr_text", "127.0.0.1", `"127.0.0.1"`),
			val("request", "request", "r->request_line", "GET /slow HTTP/1.1", `"GET /slow HTTP/1.1"`),
			hidden,
			conn("client", "r->connection->number", 17),
			role,
			val("client read", "eof", "r->connection->read->eof", uint64(1), "1"),
			unreadable("upstream", "conn", "r->upstream->peer.connection->number"),
			unreadable("upstream read", "eof", "r->upstream->peer.connection->read->eof"),
		},
		Messages: []string{"client went away\n"},
		Stack: &output.Stack{
			Frames: []output.Frame{
				{Module: "/usr/sbin/nginx", Address: 0x5a3f2, Symbol: "ngx_http_finalize_request", Offset: 0, File: "src/http/ngx_http_request.c", Line: 2510},
				{Lua: &output.LuaFrame{Kind: "lua", Source: "auth.lua", Line: 12, Text: "auth.lua:12: in function 'check'"}},
				{Module: "/usr/sbin/nginx", Address: 0x4b000, Symbol: "ngx_http_terminate_request", Offset: 0x1d, Inlined: true, File: "src/http/ngx_http_request.c", Line: 2600},
				{Module: "/lib/libc.so.6", Address: 0x2700, Symbol: "", Offset: 0},
			},
			Truncated: true, Reason: "copied stack ends",
			Notes: []string{"libc.so.6 replaced on disk"},
		},
	}
}

func TestEventRecord(t *testing.T) {
	r := eventRecord(finalize())
	if !r.Time.Equal(at) || r.Name != EventName || r.Severity != log.SeverityInfo {
		t.Errorf("time %v name %q severity %v", r.Time, r.Name, r.Severity)
	}
	want := map[string]any{
		KeyProbe:                         "ngx_http_finalize_request",
		KeyFunction:                      "ngx_http_finalize_request",
		KeyFilePath:                      "src/http/ngx_http_request.c",
		KeyLineNo:                        int64(2510),
		"ngxprobe.value.request.rc":      int64(499),
		"ngxprobe.value.request.status":  int64(0),
		"ngxprobe.value.request.client":  "127.0.0.1",
		"ngxprobe.value.request.request": "GET /slow HTTP/1.1",
		"ngxprobe.value.client.conn":     int64(17),
		"ngxprobe.value.client.role":     "client",
		"ngxprobe.value.client.read.eof": int64(1),
		KeyUnreadable:                    []string{"upstream.conn", "upstream.read.eof"},
		KeyConnection:                    int64(17),
		KeyPeerAddress:                   "127.0.0.1",
		KeyPID:                           int64(4242),
		KeyTID:                           int64(4242),
		KeyMessages:                      []string{"client went away\n"},
		KeyStacktrace: "5a3f2: ngx_http_finalize_request+0x0 (src/http/ngx_http_request.c:2510)\n" +
			"[lua] auth.lua:12: in function 'check'\n" +
			"4b000: ngx_http_terminate_request (inlined) (src/http/ngx_http_request.c:2600)\n" +
			"2700: ?? (/lib/libc.so.6)\n" +
			"... truncated: copied stack ends\n" +
			"note: libc.so.6 replaced on disk",
	}
	if got := attrMap(t, r.Attrs); !reflect.DeepEqual(got, want) {
		t.Errorf("attributes:\n got %v\nwant %v", got, want)
	}
	wantBody := `ngx_http_finalize_request pid 4242: request: rc=499 status=0 client="127.0.0.1" request="GET /slow HTTP/1.1"; ` +
		`client: conn=*17 role=client; client read: eof=1; upstream: - | client went away`
	if r.Body != wantBody {
		t.Errorf("body:\n got %s\nwant %s", r.Body, wantBody)
	}
}

func TestEventAttributes(t *testing.T) {
	logConn := conn("recv", "c->log->connection", 9)
	logConn.Name = "log"
	tests := []struct {
		name string
		ev   output.Event
		want map[string]any // a subset of the attributes; nil values must be absent
	}{{
		name: "sockaddr peer wins over addr_text",
		ev: output.Event{Values: []output.Value{
			val("", "client", "c->addr_text", "10.0.0.9", `"10.0.0.9"`),
			val("", "peer", "c->sockaddr", "10.0.0.1:443", "10.0.0.1:443"),
		}},
		want: map[string]any{KeyPeerAddress: "10.0.0.1", KeyPeerPort: int64(443), "ngxprobe.value.peer": "10.0.0.1:443"},
	}, {
		name: "IPv6 sockaddr",
		ev:   output.Event{Values: []output.Value{val("", "peer", "u->peer.sockaddr", "[::1]:8080", "[::1]:8080")}},
		want: map[string]any{KeyPeerAddress: "::1", KeyPeerPort: int64(8080)},
	}, {
		name: "unix socket",
		ev:   output.Event{Values: []output.Value{val("", "peer", "c->sockaddr", "unix:/run/app.sock", "unix:/run/app.sock")}},
		want: map[string]any{KeyPeerAddress: "/run/app.sock", KeyPeerPort: nil},
	}, {
		name: "a quoted string is not a socket address",
		ev:   output.Event{Values: []output.Value{val("", "host", "r->host", "10.0.0.1:443", `"10.0.0.1:443"`)}},
		want: map[string]any{KeyPeerAddress: nil},
	}, {
		name: "the log's connection is the *N",
		ev:   output.Event{Values: []output.Value{conn("recv", "c->number", 12), logConn}},
		want: map[string]any{KeyConnection: int64(9), "ngxprobe.value.recv.conn": int64(12), "ngxprobe.value.recv.log": int64(9)},
	}, {
		name: "an unreadable connection is no *N",
		ev: output.Event{Values: []output.Value{
			func() output.Value {
				v := unreadable("client", "conn", "r->connection->number")
				v.Display = output.Connection
				return v
			}(),
			conn("upstream", "r->upstream->peer.connection->number", 33),
		}},
		want: map[string]any{KeyConnection: int64(33), KeyUnreadable: []string{"client.conn"}},
	}, {
		name: "types",
		ev: output.Event{Values: []output.Value{
			val("", "big", "x", uint64(1<<63), "9223372036854775808"),
			val("", "p", "r->pool", output.Pointer(0x7f00dead), "0x7f00dead"),
			val("", "neg", "y", int64(-1), "-1"),
			val("", "ok", "z", true, "true"),
			val("", "state", "s", "NGX_AGAIN", "NGX_AGAIN"),
		}},
		want: map[string]any{
			"ngxprobe.value.big": "9223372036854775808", "ngxprobe.value.p": "0x7f00dead",
			"ngxprobe.value.neg": int64(-1), "ngxprobe.value.ok": true, "ngxprobe.value.state": "NGX_AGAIN",
		},
	}, {
		name: "not UTF-8",
		ev:   output.Event{Values: []output.Value{val("", "req", "r->request_line", "GET /\xff\x9b HTTP/1.1", `"GET /\xff\x9b HTTP/1.1"`)}},
		want: map[string]any{"ngxprobe.value.req": "GET /\uFFFD\uFFFD HTTP/1.1"},
	}, {
		name: "repeated names",
		ev: output.Event{Values: []output.Value{
			val("read", "eof", "a->eof", uint64(0), "0"),
			val("read", "eof", "b->eof", uint64(1), "1"),
		}},
		want: map[string]any{"ngxprobe.value.read.eof": int64(0), "ngxprobe.value.read.eof_2": int64(1)},
	}, {
		name: "clone, no stack, no values",
		ev:   output.Event{Probe: "ngx_close_connection", Function: "ngx_close_connection.part.0", Clone: true},
		want: map[string]any{KeyClone: true, KeyFunction: "ngx_close_connection.part.0", KeyStacktrace: nil, KeyFilePath: nil, KeyUnreadable: nil},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := attrMap(t, eventRecord(tt.ev).Attrs)
			for k, w := range tt.want {
				g, ok := got[k]
				switch {
				case w == nil && ok:
					t.Errorf("%s = %#v, want none", k, g)
				case w != nil && !reflect.DeepEqual(g, w):
					t.Errorf("%s = %#v, want %#v", k, g, w)
				}
			}
		})
	}
}

func TestFlipRecord(t *testing.T) {
	tests := []struct {
		name string
		f    output.Flip
		want map[string]any
		body string
	}{{
		name: "exact, upstream of a client",
		f: output.Flip{
			Time: at, PID: 10, TID: 11, Mode: "exact", Field: "c->close", Old: 0, New: 1,
			Conn: 21, Role: "upstream", LoggedAs: 20, Client: "192.0.2.7",
			Function: "ngx_http_upstream_finalize_request", File: "src/http/ngx_http_upstream.c", Line: 4500, Site: "movb $0x1,0x5c(%rax)",
		},
		want: map[string]any{
			KeyFlipField: "c->close", KeyFlipMode: "exact", KeyFlipOld: int64(0), KeyFlipNew: int64(1),
			KeyFlipConn: int64(21), KeyFlipRole: "upstream", KeyFlipSite: "movb $0x1,0x5c(%rax)",
			KeyFunction: "ngx_http_upstream_finalize_request", KeyFilePath: "src/http/ngx_http_upstream.c", KeyLineNo: int64(4500),
			KeyConnection: int64(20), KeyPeerAddress: "192.0.2.7", KeyPID: int64(10), KeyTID: int64(11),
		},
		body: "pid 10 flip c->close 0 -> 1 conn *21 upstream (of *20, client 192.0.2.7) [exact] at src/http/ngx_http_upstream.c:4500 in ngx_http_upstream_finalize_request (movb $0x1,0x5c(%rax))",
	}, {
		name: "diff, client with a socket address, stack",
		f: output.Flip{
			Time: at, PID: 10, TID: 10, Mode: "diff", Field: "c->read->eof", Old: 0, New: 1,
			Conn: 5, Role: "client", Client: "[2001:db8::1]:51000", From: "ngx_http_read_request_header", To: "ngx_http_finalize_request",
			Stack: &output.Stack{Frames: []output.Frame{{Module: "/usr/sbin/nginx", Address: 0x10, Symbol: "main", Offset: 4}}},
		},
		want: map[string]any{
			KeyFlipFrom: "ngx_http_read_request_header", KeyFlipTo: "ngx_http_finalize_request",
			KeyConnection: int64(5), KeyPeerAddress: "2001:db8::1", KeyPeerPort: int64(51000),
			KeyStacktrace: "10: main+0x4 (/usr/sbin/nginx)", KeyFunction: nil, KeyFilePath: nil, KeyFlipSite: nil,
		},
		body: "pid 10 flip c->read->eof 0 -> 1 conn *5 client (client [2001:db8::1]:51000) [diff] between ngx_http_read_request_header and ngx_http_finalize_request",
	}, {
		name: "masked client, huge value",
		f:    output.Flip{Mode: "diff", Field: "x", New: 1<<64 - 1, Client: output.Mask, From: "a", To: "a", Function: "a"},
		want: map[string]any{KeyPeerAddress: output.Mask, KeyFlipNew: "18446744073709551615", KeyConnection: nil, KeyFunction: "a"},
		body: "pid 0 flip x 0 -> 18446744073709551615 conn *0  (client ***) [diff] inside a (seen at a, then at a)",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := flipRecord(tt.f)
			if r.Name != FlipName || !r.Time.Equal(tt.f.Time) {
				t.Errorf("name %q time %v", r.Name, r.Time)
			}
			got := attrMap(t, r.Attrs)
			for k, w := range tt.want {
				g, ok := got[k]
				switch {
				case w == nil && ok:
					t.Errorf("%s = %#v, want none", k, g)
				case w != nil && !reflect.DeepEqual(g, w):
					t.Errorf("%s = %#v, want %#v", k, g, w)
				}
			}
			if r.Body != tt.body {
				t.Errorf("body:\n got %s\nwant %s", r.Body, tt.body)
			}
		})
	}
}

func TestAggregateRecords(t *testing.T) {
	agg := output.Aggregate{
		Name: "closes", Func: "count", KeyNames: []string{"probe", "$retval"},
		Rows: []output.AggregateRow{
			{Keys: []output.Key{{Readable: true, Data: "ngx_close_connection", Text: "ngx_close_connection"}, {Readable: true, Data: int64(-1), Text: "-1"}}, Count: 7},
			{Keys: []output.Key{{Readable: true, Data: "ngx_close_connection", Text: "ngx_close_connection"}, {}}, Count: 2},
			{Keys: []output.Key{{Readable: true, Data: "ngx_close_connection", Text: "ngx_close_connection"}, {}}, Count: 1},
		},
	}
	recs := aggregateRecords(agg, at)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2 (the unreadable keys merged)", len(recs))
	}
	// Sorted by value, as the other printers: the merged row (3) first.
	want := []map[string]any{{
		KeyAggName: "closes", KeyAggFunc: "count", KeyAggValue: int64(3), KeyAggCount: int64(3),
		KeyAggSum: int64(0), KeyAggMin: int64(0), KeyAggMax: int64(0),
		"ngxprobe.aggregate.key.probe": "ngx_close_connection", KeyUnreadable: []string{"$retval"},
	}, {
		KeyAggName: "closes", KeyAggFunc: "count", KeyAggValue: int64(7), KeyAggCount: int64(7),
		KeyAggSum: int64(0), KeyAggMin: int64(0), KeyAggMax: int64(0),
		"ngxprobe.aggregate.key.probe": "ngx_close_connection", "ngxprobe.aggregate.key.$retval": int64(-1),
	}}
	bodies := []string{"@closes[ngx_close_connection, ?]: 3", "@closes[ngx_close_connection, -1]: 7"}
	for i, r := range recs {
		if got := attrMap(t, r.Attrs); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("row %d:\n got %v\nwant %v", i, got, want[i])
		}
		if r.Body != bodies[i] || r.Name != AggregateName || !r.Time.Equal(at) {
			t.Errorf("row %d: body %q name %q time %v", i, r.Body, r.Name, r.Time)
		}
	}

	total := aggregateRecords(output.Aggregate{Name: "bytes", Func: "avg", Rows: []output.AggregateRow{{Count: 4, Sum: 10, Min: 1, Max: 5}}}, at)
	if len(total) != 1 || total[0].Body != "@bytes: 2" || attrMap(t, total[0].Attrs)[KeyAggValue] != int64(2) {
		t.Errorf("keyless avg: %+v", total)
	}
	if n := len(aggregateRecords(output.Aggregate{Name: "none", Func: "count", KeyNames: []string{"k"}}, at)); n != 0 {
		t.Errorf("no rows: %d records", n)
	}
}

func TestSummaryRecord(t *testing.T) {
	s := output.Summary{Probes: []output.ProbeCount{
		{Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request", Hits: 10, Events: 9, Lost: 1},
		{Probe: "ngx_close_connection", Function: "ngx_close_connection", Hits: 5, Events: 5},
	}}
	r := summaryRecord(s, 3, at)
	want := map[string]any{
		KeyHits: int64(15), KeyEvents: int64(14), KeyLost: int64(1), KeyDropped: int64(3),
		KeyProbes: []string{
			"ngx_http_finalize_request (ngx_http_finalize_request): hits 10, events 9, lost 1",
			"ngx_close_connection (ngx_close_connection): hits 5, events 5, lost 0",
		},
	}
	if got := attrMap(t, r.Attrs); !reflect.DeepEqual(got, want) {
		t.Errorf("attributes:\n got %v\nwant %v", got, want)
	}
	if r.Body != "ngxprobe: detached; 15 hits, 14 events, 1 lost, 3 dropped" || r.Severity != log.SeverityWarn || r.Name != SummaryName {
		t.Errorf("body %q severity %v name %q", r.Body, r.Severity, r.Name)
	}
	if r := summaryRecord(output.Summary{}, 0, at); r.Severity != log.SeverityInfo {
		t.Errorf("clean summary: severity %v", r.Severity)
	}
}

// The body is one line whatever nginx sent: every part is escaped.
func TestBodyEscaped(t *testing.T) {
	ev := output.Event{
		Probe: "p", PID: 1, TID: 2,
		Values:   []output.Value{val("g\x1b[31m", "v", "e", "a\nb", "\"a\\nb\"\x1b]0;x\a")},
		Messages: []string{"line one\nline\x1b[2J two"},
	}
	body := eventRecord(ev).Body
	if strings.ContainsAny(body, "\n\r\x1b\a") {
		t.Errorf("body has a control character: %q", body)
	}
	if want := `p pid 1 tid 2: g\x1b[31m: v="a\nb"\x1b]0;x\a | line one | line\x1b[2J two`; body != want {
		t.Errorf("body:\n got %s\nwant %s", body, want)
	}
}

func TestLogRecord(t *testing.T) {
	r := eventRecord(finalize())
	lr := r.logRecord()
	if lr.EventName() != EventName || !lr.Timestamp().Equal(at) || lr.Severity() != log.SeverityInfo || lr.SeverityText() != "INFO" {
		t.Errorf("log record: %q %v %v %q", lr.EventName(), lr.Timestamp(), lr.Severity(), lr.SeverityText())
	}
	if lr.Body().AsString() != r.Body || lr.AttributesLen() != len(r.Attrs) {
		t.Errorf("body %q, %d attributes, want %d", lr.Body().AsString(), lr.AttributesLen(), len(r.Attrs))
	}
}

// PartialSuccess has the shape of the SDK's internal type.
type PartialSuccess struct {
	ErrorMessage  string
	RejectedItems int64
	RejectedKind  string
}

func (p PartialSuccess) Error() string { return "partial success" }

func TestPartialSuccess(t *testing.T) {
	tests := []struct {
		err  error
		n    uint64
		only bool
	}{
		{nil, 0, false},
		{errors.New("unavailable"), 0, false},
		{PartialSuccess{RejectedItems: 3}, 3, true},
		{errors.Join(nil, PartialSuccess{RejectedItems: 2}, PartialSuccess{RejectedItems: 1}), 3, true},
		{errors.Join(PartialSuccess{RejectedItems: 2}, errors.New("then failed")), 0, false},
	}
	for _, tt := range tests {
		n, only := partialSuccess(tt.err)
		if n != tt.n || only != tt.only {
			t.Errorf("partialSuccess(%v) = %d, %v; want %d, %v", tt.err, n, only, tt.n, tt.only)
		}
	}
}
