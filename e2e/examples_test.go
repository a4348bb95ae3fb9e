package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/incidents"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// The example scripts of examples/, each run against the incident it
// explains (internal/incidents): the JSON it prints must hold the
// diagnosis its README promises, for the very connection nginx logged.

// exampleNames are the example directories that run on every nginx; each
// holds NAME.ngxp and a README.md. The lua-* ones, which need
// lua-nginx-module, are luaExampleNames.
var exampleNames = []string{"wss-eof", "client-abort-499", "reset-by-peer", "upstream-prematurely-closed", "close-stacks"}

// exampleWarmups is how many requests a scenario's nginx serves before
// ngxprobe attaches, so that the incident's connection is not *1 and a
// wrong read (or a hard-wired number) can't pass.
const exampleWarmups = 3

// exampleScript is the path of an example's script in this module.
func exampleScript(t testing.TB, name string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "examples", name, name+".ngxp")
}

// exEvent is a JSON event with its stack.
type exEvent struct {
	Event
	Stack *jsonStack `json:"stack"`
}

// exEvents parses the JSON events ngxprobe has printed so far, with their
// stacks (events() drops them).
func exEvents(t testing.TB, p *proc) []exEvent { return jsonLines[exEvent](t, p) }

// num is the readable integer value named name.
func (e exEvent) num(name string) (int64, bool) { return readableInt(e.ByName(name)) }

// str is the readable string value named name.
func (e exEvent) str(name string) (string, bool) { return readableStr(e.ByName(name)) }

func (e exEvent) is(name string, want int64) bool {
	n, ok := e.num(name)
	return ok && n == want
}

// frames are the stack's function names, innermost first, without clone
// suffixes (.lto_priv.0).
func (e exEvent) frames() []string {
	if e.Stack == nil {
		return nil
	}
	var names []string
	for _, f := range e.Stack.Frames {
		names = append(names, normalizeSymbol(f.Symbol))
	}
	return names
}

func (e exEvent) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// exRun is one example script run against one incident.
type exRun struct {
	t   *testing.T
	sc  *incidents.Scenario
	srv *nginxtest.Server
	res incidents.Result
	obs incidents.Observation
	// conn is the incident's client connection: the *N of the error-log
	// line (when nginx logs one) and the access log's $connection.
	conn int64
	p    *proc
	evs  []exEvent
}

// all returns the events of probe that match.
func (r *exRun) all(probe string, match func(exEvent) bool) []exEvent {
	var out []exEvent
	for _, ev := range r.evs {
		if ev.Probe == probe && (match == nil || match(ev)) {
			out = append(out, ev)
		}
	}
	return out
}

// one returns the single event of probe that matches; it fails the test
// when there is none or more than one.
func (r *exRun) one(probe, what string, match func(exEvent) bool) (exEvent, bool) {
	r.t.Helper()
	evs := r.all(probe, match)
	if len(evs) != 1 {
		r.t.Errorf("%d %s events for %s, want 1:\n%s", len(evs), probe, what, r.dump())
		return exEvent{}, false
	}
	return evs[0], true
}

// index is the position of ev in the output.
func (r *exRun) index(ev exEvent) int {
	for i, e := range r.evs {
		if e.Time == ev.Time && e.Probe == ev.Probe && e.TID == ev.TID {
			return i
		}
	}
	return -1
}

// value is the value named name; its absence fails the test.
func (r *exRun) value(ev exEvent, name string) (Value, bool) {
	r.t.Helper()
	v, ok := ev.ByName(name)
	if !ok {
		r.t.Errorf("%s event has no value %q: %s", ev.Probe, name, ev)
	}
	return v, ok
}

// wantNum checks the integer value named name.
func (r *exRun) wantNum(ev exEvent, name string, want int64) {
	r.t.Helper()
	v, ok := r.value(ev, name)
	if !ok {
		return
	}
	if n, isInt := v.Int(); !v.Readable || !isInt || n != want {
		r.t.Errorf("%s event: %s (%s) = %s (readable %v %s), want %d", ev.Probe, name, v.Expr, v.Value, v.Readable, v.Why, want)
	}
}

// wantStr checks the string value named name.
func (r *exRun) wantStr(ev exEvent, name, want string) {
	r.t.Helper()
	v, ok := r.value(ev, name)
	if !ok {
		return
	}
	if s, isStr := v.Str(); !v.Readable || !isStr || s != want {
		r.t.Errorf("%s event: %s (%s) = %s (readable %v %s), want %q", ev.Probe, name, v.Expr, v.Value, v.Readable, v.Why, want)
	}
}

// wantRole checks a c->listening value: "client" or "upstream".
func (r *exRun) wantRole(ev exEvent, name, want string) {
	r.t.Helper()
	v, ok := r.value(ev, name)
	if !ok {
		return
	}
	if s, _ := v.Str(); !v.Readable || s != want || v.Role != want {
		r.t.Errorf("%s event: %s (%s) = %s, role %q, want %q", ev.Probe, name, v.Expr, v.Value, v.Role, want)
	}
}

// wantFrames checks that the stack holds each function, in this order
// from the innermost frame outwards (not necessarily adjacent).
func (r *exRun) wantFrames(ev exEvent, fns ...string) {
	r.t.Helper()
	names := ev.frames()
	if ev.Stack == nil || len(names) == 0 {
		r.t.Errorf("%s event has no stack: %s", ev.Probe, ev)
		return
	}
	i := 0
	for _, n := range names {
		if i < len(fns) && n == fns[i] {
			i++
		}
	}
	if i < len(fns) {
		r.t.Errorf("%s event: stack lacks %s (after %v); frames: %s", ev.Probe, fns[i], fns[:i], strings.Join(names, " < "))
	}
	if ev.Stack.Truncated {
		r.t.Errorf("%s event: stack truncated: %s", ev.Probe, ev.Stack.Reason)
	}
}

// dump is the events, for failure messages.
func (r *exRun) dump() string {
	var b strings.Builder
	for _, ev := range r.evs {
		fmt.Fprintf(&b, "  %s %s", ev.Probe, ev.Function)
		for _, v := range ev.Values {
			fmt.Fprintf(&b, " %s=%s", v.Name, v.Value)
		}
		if names := ev.frames(); len(names) > 0 {
			if len(names) > 4 {
				names = names[:4]
			}
			fmt.Fprintf(&b, " stack %s", strings.Join(names, " < "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// exampleCase is one example script against one incident.
type exampleCase struct {
	example  string                               // examples/EXAMPLE/EXAMPLE.ngxp
	scenario string                               // the subtest name
	incident func(testing.TB) *incidents.Scenario // the reproduction
	ready    func(r *exRun) bool                  // the diagnostic events are out
	check    func(t *testing.T, r *exRun)         // the diagnosis is in them
}

// byConn matches the events whose value called name is the incident's
// connection number.
func byConn(r *exRun, name string) func(exEvent) bool {
	return func(e exEvent) bool { return e.is(name, r.conn) }
}

var exampleCases = []exampleCase{
	{
		// The client half-closes the tunnel before the 101: nginx gives up
		// on the upstream (499) from the client's side.
		example: "wss-eof", scenario: "half-close", incident: incidents.WSSHalfClose,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_http_upstream_finalize_request", byConn(r, "client_conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			ev, ok := r.one("ngx_http_upstream_finalize_request", "the client connection", byConn(r, "client_conn"))
			if !ok {
				return
			}
			r.wantNum(ev, "rc", 499)
			r.wantNum(ev, "upgraded", 0)
			r.wantNum(ev, "client_eof", 1)
			r.wantNum(ev, "client_error", 1)
			r.wantNum(ev, "client_timedout", 0)
			r.wantStr(ev, "client_addr", incidents.FakeClientIP)
			if addr, _ := r.obs.Line.Field("client"); addr != incidents.FakeClientIP {
				t.Errorf("error log client: %q, want %q", addr, incidents.FakeClientIP)
			}
			r.wantNum(ev, "upstream_eof", 0)
			r.wantNum(ev, "upstream_error", 0)
			r.wantNum(ev, "upstream_timedout", 0)
			up, ok := ev.num("upstream_conn")
			if !ok || up == r.conn || up <= exampleWarmups {
				t.Errorf("upstream_conn %d (readable %v): want the upstream connection's own number, not *%d", up, ok, r.conn)
			}
			r.wantFrames(ev, "ngx_http_upstream_finalize_request", "ngx_http_upstream_check_broken_connection",
				"ngx_http_request_handler", "ngx_epoll_process_events")
			// The upstream never sent its FIN: nginx closed it first.
			if evs := r.all("ngx_unix_recv%return", func(e exEvent) bool { return e.is("conn", up) }); len(evs) != 0 {
				t.Errorf("an eof on the upstream connection *%d, which nginx closed first:\n%s", up, r.dump())
			}
		},
	},
	{
		// The backend closes the upgraded tunnel: nginx logs nothing and
		// $status is 101; the eof is the upstream's.
		example: "wss-eof", scenario: "backend-close", incident: incidents.WSSBackendClose,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_unix_recv%return", byConn(r, "logged_as"))) > 0 &&
				len(r.all("ngx_http_upstream_finalize_request", byConn(r, "client_conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			recv, ok1 := r.one("ngx_unix_recv%return", "a FIN on the tunnel", byConn(r, "logged_as"))
			fin, ok2 := r.one("ngx_http_upstream_finalize_request", "the client connection", byConn(r, "client_conn"))
			if !ok1 || !ok2 {
				return
			}
			r.wantRole(recv, "role", "upstream")
			r.wantNum(recv, "eof", 1)
			r.wantNum(recv, "error", 0)
			up, ok := recv.num("conn")
			if !ok || up == r.conn || up <= exampleWarmups {
				t.Errorf("the FIN's conn %d (readable %v): want the upstream connection's own number, not *%d", up, ok, r.conn)
			}
			r.wantFrames(recv, "ngx_http_upstream_process_upgraded", "ngx_http_upstream_handler", "ngx_epoll_process_events")

			r.wantNum(fin, "rc", 0)
			r.wantNum(fin, "upgraded", 1)
			r.wantNum(fin, "upstream_conn", up)
			r.wantNum(fin, "upstream_eof", 1)
			r.wantNum(fin, "upstream_error", 0)
			r.wantNum(fin, "upstream_timedout", 0)
			r.wantNum(fin, "client_timedout", 0)
			r.wantNum(fin, "client_eof", 0)
			r.wantNum(fin, "client_error", 0)
			r.wantStr(fin, "client_addr", incidents.FakeClientIP)
			r.wantFrames(fin, "ngx_http_upstream_finalize_request", "ngx_http_upstream_handler")
			if r.index(recv) > r.index(fin) {
				t.Errorf("the upstream's FIN is printed after the tunnel's end:\n%s", r.dump())
			}
			// No client-side FIN: the client did not close first.
			if evs := r.all("ngx_ssl_recv%return", byConn(r, "conn")); len(evs) != 0 {
				t.Errorf("a TLS eof on the client connection *%d:\n%s", r.conn, r.dump())
			}
		},
	},
	{
		example: "client-abort-499", scenario: "client-abort", incident: incidents.ClientAbort499,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_http_finalize_request", byConn(r, "client_conn"))) > 0 &&
				len(r.all("ngx_http_upstream_finalize_request", byConn(r, "client_conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			up, ok1 := r.one("ngx_http_upstream_finalize_request", "the client connection", byConn(r, "client_conn"))
			fin, ok2 := r.one("ngx_http_finalize_request", "the client connection", byConn(r, "client_conn"))
			if !ok1 || !ok2 {
				return
			}
			upConn, ok := up.num("upstream_conn")
			if !ok || upConn == r.conn || upConn <= exampleWarmups {
				t.Errorf("upstream_conn %d (readable %v): want the upstream connection's own number, not *%d", upConn, ok, r.conn)
			}
			r.wantNum(up, "upstream_eof", 0)
			r.wantNum(up, "upstream_error", 0)
			r.wantNum(up, "request_sent", 1)
			r.wantNum(up, "header_sent", 0)
			want := fmt.Sprintf("*%d: client closed first; upstream *%d is closed too\n", r.conn, upConn)
			if len(up.Messages) != 1 || up.Messages[0] != want {
				t.Errorf("printf: %q, want %q", up.Messages, want)
			}

			r.wantNum(fin, "rc", 499)
			r.wantNum(fin, "client_eof", 1)
			r.wantNum(fin, "client_error", 1)
			r.wantStr(fin, "client_addr", "127.0.0.1")
			r.wantStr(fin, "request", r.res.Request)
			r.wantFrames(fin, "ngx_http_finalize_request", "ngx_http_upstream_check_broken_connection",
				"ngx_http_request_handler", "ngx_epoll_process_events")
			if r.index(up) > r.index(fin) {
				t.Errorf("the upstream side is printed after the 499:\n%s", r.dump())
			}
			st := aggregates(t, r.p)["by_status"]
			if st.Func != "count" || len(st.Rows) != 1 || len(st.Rows[0].Keys) != 1 ||
				string(st.Rows[0].Keys[0]) != "499" || st.Rows[0].Value != 1 {
				t.Errorf("@by_status: %+v, want one row [499] = 1", st)
			}
		},
	},
	{
		example: "reset-by-peer", scenario: "lingering-close-rst", incident: incidents.ResetByPeer,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_http_set_lingering_close", byConn(r, "conn"))) > 0 &&
				len(r.all("ngx_unix_recv%return", byConn(r, "conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			ling, ok1 := r.one("ngx_http_set_lingering_close", "the client connection", byConn(r, "conn"))
			recv, ok2 := r.one("ngx_unix_recv%return", "the client connection", byConn(r, "conn"))
			if !ok1 || !ok2 {
				return
			}
			r.wantNum(ling, "status", 200)
			r.wantStr(ling, "request", r.res.Request)
			sent, ok := ling.num("sent")
			// c->sent counts the header too: more than $body_bytes_sent.
			if !ok || sent <= r.obs.Access.BodyBytesSent || r.obs.Access.BodyBytesSent <= 0 {
				t.Errorf("lingering close: sent %d (readable %v), want > $body_bytes_sent %d > 0", sent, ok, r.obs.Access.BodyBytesSent)
			}

			r.wantNum(recv, "ret", -1)
			r.wantNum(recv, "error", 1)
			r.wantNum(recv, "eof", 0)
			r.wantNum(recv, "sent", sent) // nothing sent after the response
			r.wantRole(recv, "role", "client")
			r.wantFrames(recv, "ngx_http_lingering_close_handler", "ngx_epoll_process_events")
			if r.index(ling) > r.index(recv) {
				t.Errorf("the RST is printed before the lingering close:\n%s", r.dump())
			}
		},
	},
	{
		example: "upstream-prematurely-closed", scenario: "mid-body", incident: incidents.UpstreamMidBody,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_readv_chain%return", byConn(r, "logged_as"))) > 0 &&
				len(r.all("ngx_http_finalize_request", byConn(r, "client_conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			fin, ok1 := r.one("ngx_readv_chain%return", "the upstream's FIN", byConn(r, "logged_as"))
			end, ok2 := r.one("ngx_http_finalize_request", "the client connection", byConn(r, "client_conn"))
			if !ok1 || !ok2 {
				return
			}
			checkUpstreamFIN(r, fin)
			// The body phase: the event pipe read the 0.
			r.wantFrames(fin, "ngx_event_pipe", "ngx_http_upstream_process_upstream", "ngx_http_upstream_handler")
			if evs := r.all("ngx_unix_recv%return", byConn(r, "logged_as")); len(evs) != 0 {
				t.Errorf("a header-phase eof in the mid-body case:\n%s", r.dump())
			}
			r.wantNum(end, "rc", 0)
			r.wantNum(end, "status", 200)
			r.wantNum(end, "header_sent", 1)
			r.wantNum(end, "content_length", 1000)
			if sent, ok := end.num("sent"); !ok || sent <= r.obs.Access.BodyBytesSent || r.obs.Access.BodyBytesSent != 10 {
				t.Errorf("sent %d (readable %v), $body_bytes_sent %d: want the header and 10 of 1000 body bytes", sent, ok, r.obs.Access.BodyBytesSent)
			}
			if r.index(fin) > r.index(end) {
				t.Errorf("the upstream's FIN is printed after the request's end:\n%s", r.dump())
			}
			checkNoDone(r)
		},
	},
	{
		example: "upstream-prematurely-closed", scenario: "before-header", incident: incidents.UpstreamBeforeHeader,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_unix_recv%return", byConn(r, "logged_as"))) > 0 &&
				len(r.all("ngx_http_finalize_request", byConn(r, "client_conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			fin, ok1 := r.one("ngx_unix_recv%return", "the upstream's FIN", byConn(r, "logged_as"))
			end, ok2 := r.one("ngx_http_finalize_request", "the client connection", byConn(r, "client_conn"))
			if !ok1 || !ok2 {
				return
			}
			checkUpstreamFIN(r, fin)
			// The header phase: ngx_http_upstream_process_header read the 0.
			r.wantFrames(fin, "ngx_http_upstream_process_header", "ngx_http_upstream_handler")
			if evs := r.all("ngx_readv_chain%return", byConn(r, "logged_as")); len(evs) != 0 {
				t.Errorf("a body-phase eof in the before-header case:\n%s", r.dump())
			}
			r.wantNum(end, "rc", 502)
			r.wantNum(end, "header_sent", 0)
			r.wantNum(end, "sent", 0)
			if r.index(fin) > r.index(end) {
				t.Errorf("the upstream's FIN is printed after the request's end:\n%s", r.dump())
			}
			checkNoDone(r)
		},
	},
	{
		// Every close with its stack: the 499's two closes.
		example: "close-stacks", scenario: "client-abort", incident: incidents.ClientAbort499,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_close_connection", byConn(r, "logged_as"))) >= 2
		},
		check: func(t *testing.T, r *exRun) {
			client, ok1 := r.one("ngx_close_connection", "the client connection", byConn(r, "conn"))
			up, ok2 := r.one("ngx_close_connection", "the upstream connection", func(e exEvent) bool {
				return e.is("logged_as", r.conn) && !e.is("conn", r.conn)
			})
			if !ok1 || !ok2 {
				return
			}
			r.wantRole(up, "role", "upstream")
			r.wantNum(up, "read_eof", 0)
			r.wantNum(up, "error", 0)
			r.wantFrames(up, "ngx_close_connection", "ngx_http_upstream_finalize_request",
				"ngx_http_upstream_check_broken_connection", "ngx_http_request_handler")
			r.wantRole(client, "role", "client")
			r.wantNum(client, "logged_as", r.conn)
			r.wantNum(client, "read_eof", 1)
			r.wantNum(client, "error", 1)
			r.wantNum(client, "sent", 0)
			r.wantFrames(client, "ngx_close_connection", "ngx_http_close_connection")
			if r.index(up) > r.index(client) {
				t.Errorf("the client connection is closed before the upstream one:\n%s", r.dump())
			}
			if n := closeCount(t, r, "1", "0", "1"); n < 1 {
				t.Errorf("@closes[1, 0, 1] = %d, want >= 1: %v", n, aggregates(t, r.p)["closes"])
			}
		},
	},
	{
		// The reset-by-peer close: from the lingering-close handler, with
		// read_error set.
		example: "close-stacks", scenario: "reset-by-peer", incident: incidents.ResetByPeer,
		ready: func(r *exRun) bool {
			return len(r.all("ngx_close_connection", byConn(r, "conn"))) > 0
		},
		check: func(t *testing.T, r *exRun) {
			client, ok := r.one("ngx_close_connection", "the client connection", byConn(r, "conn"))
			if !ok {
				return
			}
			r.wantRole(client, "role", "client")
			r.wantNum(client, "read_error", 1)
			r.wantNum(client, "read_eof", 0)
			r.wantFrames(client, "ngx_close_connection", "ngx_http_close_connection", "ngx_http_lingering_close_handler")
			if n := closeCount(t, r, "0", "1", "0"); n < 1 {
				t.Errorf("@closes[0, 1, 0] = %d, want >= 1: %v", n, aggregates(t, r.p)["closes"])
			}
		},
	},
}

// checkUpstreamFIN: a read on the upstream connection returned 0.
func checkUpstreamFIN(r *exRun, ev exEvent) {
	r.t.Helper()
	r.wantRole(ev, "role", "upstream")
	r.wantNum(ev, "eof", 1)
	if up, ok := ev.num("conn"); !ok || up == r.conn || up <= exampleWarmups {
		r.t.Errorf("the FIN's conn %d (readable %v): want the upstream connection's own number, not *%d", up, ok, r.conn)
	}
}

// checkNoDone: the filter leaves out NGX_DONE (-4), the proxy module
// taking the request over.
func checkNoDone(r *exRun) {
	r.t.Helper()
	if evs := r.all("ngx_http_finalize_request", func(e exEvent) bool { return e.is("rc", -4) }); len(evs) != 0 {
		r.t.Errorf("finalize events with rc -4 (NGX_DONE) passed the filter:\n%s", r.dump())
	}
}

// closeCount is the @closes row with these keys.
func closeCount(t *testing.T, r *exRun, keys ...string) int64 {
	t.Helper()
	for _, row := range aggregates(t, r.p)["closes"].Rows {
		var got []string
		for _, k := range row.Keys {
			got = append(got, string(k))
		}
		if strings.Join(got, ",") == strings.Join(keys, ",") {
			return row.Value
		}
	}
	return 0
}

// TestExampleScenarios runs each example script, with ngxprobe run -p
// MASTER -o json, against the incident it explains, on both nginx builds,
// and checks that the incident happened (error-log line, status) and that
// the JSON holds the diagnosis for the connection nginx logged.
func TestExampleScenarios(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			target := ownBuild(t, nginxtest.Build(t, v))
			for _, c := range exampleCases {
				t.Run(c.example+"/"+c.scenario, func(t *testing.T) { runExampleCase(t, target, c) })
			}
		})
	}
}

// exampleTarget is an nginx to run the example scenarios on, and the
// environment ngxprobe gets there.
type exampleTarget struct {
	variant string
	start   func(t *testing.T, cfg nginxtest.Config) *nginxtest.Server
	env     []string
}

// ownBuild runs scenarios on one of our own builds.
func ownBuild(t *testing.T, inst nginxtest.Install) exampleTarget {
	return exampleTarget{variant: inst.Variant, start: func(t *testing.T, cfg nginxtest.Config) *nginxtest.Server {
		// A copy of the binary: uprobes are per file, and another
		// tracer's uretprobe on the shared build (a test running beside
		// this one) would land in this nginx too and cut its stacks short.
		return nginxtest.Start(t, privateBinary(t, inst), cfg)
	}}
}

func runExampleCase(t *testing.T, target exampleTarget, c exampleCase) {
	start := time.Now()
	sc := c.incident(t)
	// A plain server beside the incident's, for the warm-up requests.
	port := nginxtest.FreePort(t)
	srv := target.start(t, nginxtest.Config{HTTP: sc.HTTP + plainServer(port, "")})
	for i := 0; i < exampleWarmups; i++ {
		checkServes(t, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	r := &exRun{t: t, sc: sc, srv: srv}

	attachStart := time.Now()
	r.p = startProbeEnv(t, target.env, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", exampleScript(t, c.example))
	attach := time.Since(attachStart)

	r.res = sc.Trigger(t)
	// The incident happened: the error-log line (level, text, request) and
	// the access-log status, for the same connection.
	r.obs = sc.Check(t, srv, r.res)
	r.conn = int64(r.obs.Access.Connection)
	if sc.ExpectLog != "" {
		l, ok := incidents.FindLogLine(srv.ErrorLog(), sc.ExpectLog)
		if !ok || l.Level != sc.ExpectLevel || int64(l.Conn) != r.conn {
			t.Fatalf("error log: want [%s] %q on *%d, found %v: %q\n%s", sc.ExpectLevel, sc.ExpectLog, r.conn, ok, l.Raw, srv.ErrorLog())
		}
		t.Logf("error log: %s", l.Raw)
	} else if len(r.obs.Lines) != 0 {
		t.Errorf("nginx logged for *%d, want nothing:\n%s", r.conn, srv.ErrorLog())
	}
	if r.obs.Access.Status != sc.ExpectStatus {
		t.Fatalf("access log: status %d, want %d", r.obs.Access.Status, sc.ExpectStatus)
	}
	t.Logf("access log: $connection %d $status %d $body_bytes_sent %d %q",
		r.obs.Access.Connection, r.obs.Access.Status, r.obs.Access.BodyBytesSent, r.obs.Access.Request)
	if r.conn <= exampleWarmups {
		t.Errorf("the incident's connection is *%d; after %d warm-up requests it should be later", r.conn, exampleWarmups)
	}

	// Wait (bounded) for the diagnostic events, then stop ngxprobe so that
	// the aggregations and the summary are printed.
	waitStart := time.Now()
	deadline := waitStart.Add(eventTimeout)
	for {
		r.evs = exEvents(t, r.p)
		if c.ready(r) || r.p.exited() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ready := c.ready(r)
	wait := time.Since(waitStart)
	stopProbeOK(t, r.p)
	r.evs = exEvents(t, r.p)
	if !ready {
		t.Fatalf("the diagnostic events for *%d are not out after %v:\n%s\n%s", r.conn, eventTimeout, r.dump(), r.p)
	}
	checkSummary(t, r.p)
	workers := srv.WorkerPIDs()
	for _, ev := range r.evs {
		if !pidIn(ev.PID, workers) {
			t.Errorf("event from pid %d, not a worker of nginx %d (workers %v): %s", ev.PID, srv.MasterPID(), workers, ev)
		}
	}
	c.check(t, r)
	if t.Failed() {
		t.Logf("events:\n%s", r.dump())
	}
	t.Logf("%s %s on %s: wall %v (ngxprobe attach %v, incident %v, events %v after the logs)",
		c.example, c.scenario, target.variant, time.Since(start).Round(time.Millisecond),
		attach.Round(time.Millisecond), r.res.Elapsed.Round(time.Millisecond), wait.Round(time.Millisecond))
}

// TestExampleCheck: ngxprobe check resolves every example against both
// nginx builds, without attaching. The lua-* examples need
// lua-nginx-module, which these builds lack: TestLuaExampleScenarios
// checks them against the OpenResty nginx.
func TestExampleCheck(t *testing.T) {
	nginxtest.RequireRoot(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Every example directory is in exampleNames or luaExampleNames, and
	// has its README.
	dirs, err := os.ReadDir(filepath.Join(root, "examples"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		if d.IsDir() && d.Name() != "lib" {
			found = append(found, d.Name())
		}
	}
	want := append(append([]string(nil), exampleNames...), luaExampleNames...)
	sort.Strings(found)
	sort.Strings(want)
	if strings.Join(found, " ") != strings.Join(want, " ") {
		t.Errorf("examples/ has %v, the tests know %v", found, want)
	}
	for _, name := range want {
		if _, err := os.Stat(filepath.Join(root, "examples", name, "README.md")); err != nil {
			t.Errorf("example %s: %v", name, err)
		}
	}
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			inst := nginxtest.Build(t, v)
			for _, name := range exampleNames {
				t.Run(name, func(t *testing.T) {
					start := time.Now()
					p := runProbe(t, ngx("check", "--binary", inst.Binary, exampleScript(t, name))...)
					took := time.Since(start)
					if code := p.exitCode(); code != 0 {
						t.Fatalf("ngxprobe check exited %d, want 0: %s", code, p)
					}
					checkNoPanic(t, p)
					if !strings.Contains(p.stdout.String(), ": ok against "+inst.Binary) {
						t.Errorf("ngxprobe check did not say ok: %s", p)
					}
					t.Logf("check %s on %s: %v", name, v, took.Round(time.Millisecond))
				})
			}
		})
	}
}
