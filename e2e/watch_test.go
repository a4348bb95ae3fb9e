package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/incidents"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/stacks"
)

// FlipEvent is one line of ngxprobe watch -o json.
type FlipEvent struct {
	PID   int           `json:"pid"`
	Flip  Flip          `json:"flip"`
	Stack *stacks.Stack `json:"stack"`
}

// Flip is the "flip" object of a watch event, with the keys the README
// documents.
type Flip struct {
	Mode     string `json:"mode"`
	Field    string `json:"field"`
	Old      uint64 `json:"old"`
	New      uint64 `json:"new"`
	Conn     int64  `json:"conn"`
	Role     string `json:"role"`
	LoggedAs int64  `json:"logged_as"`
	Client   string `json:"client,omitempty"`
	Function string `json:"function"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Site     string `json:"site,omitempty"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
}

func (f FlipEvent) String() string {
	b, _ := json.Marshal(f.Flip)
	var frames []string
	if f.Stack != nil {
		for _, fr := range f.Stack.Frames {
			frames = append(frames, fr.Symbol)
		}
	}
	reason := ""
	if f.Stack != nil && f.Stack.Truncated {
		reason = " (truncated: " + f.Stack.Reason + ")"
	}
	return fmt.Sprintf("%s stack %v%s", b, frames, reason)
}

func (f FlipEvent) hasFrame(fn string) bool {
	if f.Stack == nil {
		return false
	}
	for _, fr := range f.Stack.Frames {
		if watchBase(fr.Symbol) == fn {
			return true
		}
	}
	return false
}

func watchBase(sym string) string {
	if i := strings.IndexByte(sym, '.'); i > 0 {
		return sym[:i]
	}
	return sym
}

// flips parses the flip lines printed so far.
func flips(t testing.TB, p *proc) []FlipEvent {
	t.Helper()
	out := jsonLines[FlipEvent](t, p)
	for _, f := range out {
		if f.Flip.Field == "" {
			t.Fatalf("ngxprobe watch printed a line that is not a flip: %+v", f)
		}
	}
	return out
}

// waitFlips polls until match has seen what it wants (bounded).
func waitFlips(t testing.TB, p *proc, timeout time.Duration, done func([]FlipEvent) bool) []FlipEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		fs := flips(t, p)
		if done(fs) || p.exited() || time.Now().After(deadline) {
			return fs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startWatch(t testing.TB, master int, mode, expr string) *proc {
	t.Helper()
	return startProbe(t, "watch", "-p", strconv.Itoa(master), "-o", "json", "--mode", mode, expr)
}

// watchScenario triggers a scenario while ngxprobe watch runs in mode and
// returns the flips that match, waiting (bounded) until each wanted mode
// has one. It returns the client's connection number too.
func watchScenario(t *testing.T, srv *nginxtest.Server, sc *incidents.Scenario, mode string, match func(client int64, f FlipEvent) bool, modes ...string) (map[string]FlipEvent, []FlipEvent, int64) {
	t.Helper()
	p := startWatch(t, srv.MasterPID(), mode, "c->read->eof")
	res := sc.Trigger(t)
	obs := sc.Check(t, srv, res)
	client := int64(obs.Access.Connection)
	found := func(fs []FlipEvent) map[string]FlipEvent {
		got := map[string]FlipEvent{}
		for _, f := range fs {
			if _, ok := got[f.Flip.Mode]; !ok && match(client, f) {
				got[f.Flip.Mode] = f
			}
		}
		return got
	}
	fs := waitFlips(t, p, eventTimeout, func(fs []FlipEvent) bool { return len(found(fs)) == len(modes) })
	stopProbeOK(t, p)
	got := found(fs)
	for _, m := range modes {
		if _, ok := got[m]; !ok {
			t.Fatalf("--mode %s: no matching flip in %s mode for client *%d; flips:\n%s\n%s", mode, m, client, flipList(fs), p)
		}
	}
	return got, fs, client
}

// The wss tunnel's backend closes: eof flips to 1 inside ngx_unix_recv on
// the upstream connection, called from ngx_http_upstream_process_upgraded;
// the reported line is the rev->eof = 1 line of the build's source. Then,
// with both modes at once, exact mode and diff mode agree.
func TestWatchWSSBackendClose(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			start := time.Now()
			inst := nginxtest.Build(t, variant)
			first := sourceLine(t, inst, "src/os/unix/ngx_recv.c", "rev->eof = 1;")
			// The first such line is kqueue's; the second is the n == 0 case.
			eofLine := nextSourceLine(t, inst, "src/os/unix/ngx_recv.c", "rev->eof = 1;", first)
			sc := incidents.WSSBackendClose(t)
			srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: sc.HTTP})
			upstreamEOF := func(client int64, f FlipEvent) bool {
				return f.Flip.Old == 0 && f.Flip.New == 1 && f.Flip.Role == "upstream" && f.Flip.LoggedAs == client &&
					f.Flip.Conn != client && f.Flip.Function == "ngx_unix_recv"
			}
			got, _, client := watchScenario(t, srv, sc, "exact", upstreamEOF, "exact")
			exact := got["exact"]
			if !strings.HasSuffix(exact.Flip.File, "src/os/unix/ngx_recv.c") || exact.Flip.Line != eofLine {
				t.Errorf("exact flip at %s:%d, want src/os/unix/ngx_recv.c:%d (rev->eof = 1;): %s", exact.Flip.File, exact.Flip.Line, eofLine, exact)
			}
			if !exact.hasFrame("ngx_unix_recv") || !exact.hasFrame("ngx_http_upstream_process_upgraded") {
				t.Errorf("exact flip: want ngx_unix_recv called from ngx_http_upstream_process_upgraded in the stack: %s", exact)
			}
			if exact.Flip.Client != incidents.FakeClientIP {
				t.Errorf("the upstream's client is %q, want %s (PROXY protocol): %s", exact.Flip.Client, incidents.FakeClientIP, exact)
			}
			t.Logf("exact: *%d (upstream of *%d) at %s:%d", exact.Flip.Conn, client, exact.Flip.File, exact.Flip.Line)

			both, _, client := watchScenario(t, srv, sc, "both", upstreamEOF, "exact", "diff")
			e, d := both["exact"], both["diff"]
			if e.Flip.Conn != d.Flip.Conn || e.Flip.Function != d.Flip.Function {
				t.Errorf("modes disagree: exact *%d in %s, diff *%d in %s", e.Flip.Conn, e.Flip.Function, d.Flip.Conn, d.Flip.Function)
			}
			if d.Flip.From != "ngx_unix_recv" || d.Flip.To != "ngx_unix_recv%return" || !d.hasFrame("ngx_http_upstream_process_upgraded") {
				t.Errorf("diff flip: want a change between ngx_unix_recv's entry and return, called from ngx_http_upstream_process_upgraded: %s", d)
			}
			t.Logf("%s: wss backend close watched in %v (client *%d)", variant, time.Since(start).Round(time.Millisecond), client)
		})
	}
}

// The wss client half-closes: eof flips in
// ngx_http_upstream_check_broken_connection on the client connection, in
// both modes, with the client address from the PROXY protocol header.
func TestWatchWSSHalfClose(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			start := time.Now()
			inst := nginxtest.Build(t, variant)
			sc := incidents.WSSHalfClose(t)
			srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: sc.HTTP})
			clientEOF := func(client int64, f FlipEvent) bool {
				return f.Flip.New == 1 && f.Flip.Role == "client" && f.Flip.Conn == client && f.Flip.Function == "ngx_http_upstream_check_broken_connection"
			}
			got, _, _ := watchScenario(t, srv, sc, "both", clientEOF, "exact", "diff")
			for mode, f := range got {
				if f.Flip.Client != incidents.FakeClientIP {
					t.Errorf("%s: client address %q, want the PROXY protocol's %s: %s", mode, f.Flip.Client, incidents.FakeClientIP, f)
				}
			}
			if e := got["exact"]; !strings.HasSuffix(e.Flip.File, "src/http/ngx_http_upstream.c") {
				t.Errorf("exact flip at %s:%d, want src/http/ngx_http_upstream.c: %s", e.Flip.File, e.Flip.Line, e)
			}
			// Diff mode's uretprobe on the writer replaced its return
			// address; the stack still reaches the event loop and main.
			for mode, f := range got {
				if !f.hasFrame("ngx_epoll_process_events") || !f.hasFrame("main") || f.Stack.Truncated {
					t.Errorf("%s: the stack stops early under a uretprobe: %s", mode, f)
				}
			}
			// The same close sets c->error next to eof.
			p := startWatch(t, srv.MasterPID(), "exact", "c->error")
			res := sc.Trigger(t)
			obs := sc.Check(t, srv, res)
			client := int64(obs.Access.Connection)
			fs := waitFlips(t, p, eventTimeout, func(fs []FlipEvent) bool { return len(fs) > 0 })
			stopProbeOK(t, p)
			found := false
			for _, f := range fs {
				found = found || f.Flip.New == 1 && f.Flip.Conn == client && f.Flip.Role == "client" && f.Flip.Function == "ngx_http_upstream_check_broken_connection"
			}
			if !found {
				t.Errorf("no c->error 0 -> 1 flip in ngx_http_upstream_check_broken_connection on client *%d:\n%s\n%s", client, flipList(fs), p)
			}
			t.Logf("%s: wss half-close watched in %v", variant, time.Since(start).Round(time.Millisecond))
		})
	}
}

// A few thousand keepalive requests with no close in the window: no flip.
func TestWatchNoFalseFlips(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, "")
	addr := strings.TrimPrefix(base, "http://")
	// Open the connections first, so that their setup is outside the window.
	const conns, perConn = 4, 750
	var cs []*bufio.ReadWriter
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		cs = append(cs, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)))
	}
	p := startWatch(t, s.MasterPID(), "exact", "c->read->eof")
	total := 0
	for i := 0; i < perConn; i++ {
		for _, rw := range cs {
			fmt.Fprintf(rw, "GET /keepalive/%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			rw.Flush()
			status, err := rw.ReadString('\n')
			if err != nil || !strings.Contains(status, " 200 ") {
				t.Fatalf("keepalive request %d: %q %v", i, status, err)
			}
			n := 0
			for {
				line, err := rw.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(strings.ToLower(line), "content-length:") {
					n, _ = strconv.Atoi(strings.TrimSpace(line[len("content-length:"):]))
				}
				if line == "\r\n" {
					break
				}
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(rw, body); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	time.Sleep(200 * time.Millisecond)
	stopProbeOK(t, p)
	if fs := flips(t, p); len(fs) != 0 {
		t.Errorf("%d false flips under %d keepalive requests with no close:\n%s", len(fs), total, flipList(fs))
	}
	sum := summary(t, p)
	t.Logf("%d keepalive requests, %d hits of the write-site probes, 0 flips", total, sum.Hits)
	if _, hot, ok := strings.Cut(p.stderr.String(), "busiest sites:\n"); ok {
		hot, _, _ = strings.Cut(hot, "{")
		t.Logf("busiest write sites:\n%s", hot)
	}
}

// proxy_read_timeout 1s meets a slow upstream: timedout flips in the
// timer-expiry code, and the request ends in 504.
func TestWatchTimeout(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	up := nginxtest.SlowUpstream(t, 3*time.Second)
	port := nginxtest.FreePort(t)
	s := nginxtest.Start(t, inst, nginxtest.Config{HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location / { proxy_pass http://%s; proxy_read_timeout 1s; }
    }`, port, up)})
	p := startWatch(t, s.MasterPID(), "exact", "c->read->timedout")
	code, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/slow", port))
	if code != 504 {
		t.Fatalf("GET /slow = %d, want 504 (proxy_read_timeout)", code)
	}
	fs := waitFlips(t, p, eventTimeout, func(fs []FlipEvent) bool { return len(fs) > 0 })
	stopProbeOK(t, p)
	var got *FlipEvent
	for i, f := range fs {
		if f.Flip.New == 1 && f.Flip.Role == "upstream" && f.hasFrame("ngx_event_expire_timers") {
			got = &fs[i]
		}
	}
	if got == nil {
		t.Fatalf("no timedout 0 -> 1 flip on the upstream connection written by ngx_event_expire_timers:\n%s\n%s", flipList(fs), p)
	}
	if !strings.HasSuffix(got.Flip.File, "src/event/ngx_event_timer.c") {
		t.Errorf("timedout written at %s:%d, want src/event/ngx_event_timer.c: %s", got.Flip.File, got.Flip.Line, got)
	}
	var access []nginxtest.AccessEntry
	for _, e := range s.AccessEntries() {
		if strings.Contains(e.Request, "/slow") {
			access = append(access, e)
		}
	}
	if len(access) != 1 || access[0].Status != 504 || int64(access[0].Connection) != got.Flip.LoggedAs {
		t.Errorf("access log %+v: want one 504 on *%d (the flip's logged-as connection)", access, got.Flip.LoggedAs)
	}
}

func flipList(fs []FlipEvent) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}

// nextSourceLine finds the first line after line that contains text.
func nextSourceLine(t testing.TB, inst nginxtest.Install, file, text string, after int) int {
	t.Helper()
	b, err := readSource(inst, file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if i+1 > after && strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("%s has no %q after line %d", file, text, after)
	return 0
}

// Bad watch expressions and fields without write sites get clear errors,
// naming the fix, before anything is attached.
func TestWatchBadInput(t *testing.T) {
	nginxtest.RequireRoot(t)
	fixture := buildC(t, "testdata/watchfix.c")
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	cases := []struct {
		binary, expr string
		want         []string
	}{
		{inst.Binary, "c->read", []string{"not a watchable field", "is a pointer (ngx_event_t *)", "c->read->eof"}},
		{inst.Binary, "c->addr_text", []string{"field wider than 8 bytes"}},
		{inst.Binary, "c->read->eoff", []string{`field not found: "eoff"`, "did you mean eof"}},
		{inst.Binary, "r->connection->read->eof", []string{"unsupported watch expression", "start at the connection c", "c->read->eof"}},
		{inst.Binary, "c->read->eof + 1", []string{"unsupported watch expression", "chain of member names"}},
		{fixture, "c->never_written", []string{"no write sites found for c->never_written", "--mode diff"}},
	}
	for _, tc := range cases {
		p := runProbe(t, ngx("watch", "--binary", tc.binary, tc.expr)...)
		if code := p.exitCode(); code == 0 {
			t.Errorf("watch %q: exit 0, want an error: %s", tc.expr, p)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(p.stderr.String(), w) {
				t.Errorf("watch %q: stderr lacks %q: %s", tc.expr, w, p)
			}
		}
		checkNoPanic(t, p)
	}
	// --explain lists every site with what is done with it, unmodelled
	// (read before and after) and left-out ones included, with reasons.
	p := runProbe(t, ngx("watch", "--binary", inst.Binary, "--explain", "--mode", "both", "c->read->eof")...)
	out := p.stdout.String()
	for _, w := range []string{"ngx_unix_recv", "src/os/unix/ngx_recv.c", "probed: new value computed", "probed before and after (effect not modelled", "NOT probed: a 16-byte", "diff points:"} {
		if !strings.Contains(out, w) {
			t.Errorf("watch --explain lacks %q:\n%s", w, tailLines(out, 40))
		}
	}
	// A real watch run leaves nothing attached once it exits.
	run := runProbe(t, ngx("watch", "--binary", inst.Binary, "--mode", "both", "--duration", "1s", "c->read->eof")...)
	if run.exitCode() != 0 {
		t.Fatalf("watch --duration 1s: %s", run)
	}
	checkNoLeftovers(t, []int{run.pid()}, []string{inst.Binary})
}

// buildC compiles a C fixture with debug info at -O2.
func buildC(t testing.TB, src string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".c"))
	if b, err := exec.Command("gcc", "-g", "-O2", "-o", out, src).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "gcc %s: %v\n%s", src, err, b)
	}
	return out
}

// watch in a probe set: the flip prints next to the script's own events.
func TestWatchInScript(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	sc := incidents.WSSBackendClose(t)
	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: sc.HTTP})
	path := writeScript(t, "watch.ngxp", `
watch c->read->eof   # exact mode: the instruction that sets it
ngx_http_upstream_finalize_request { print(rc, client = r->connection->number) }
`)
	p := startProbe(t, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", path)
	res := sc.Trigger(t)
	obs := sc.Check(t, srv, res)
	client := int64(obs.Access.Connection)
	var flip *FlipEvent
	var finalize bool
	deadline := time.Now().Add(eventTimeout)
	for time.Now().Before(deadline) && (flip == nil || !finalize) {
		time.Sleep(50 * time.Millisecond)
		text := p.stdout.String()
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, `"flip"`) {
				var f FlipEvent
				if json.Unmarshal([]byte(line), &f) == nil && f.Flip.LoggedAs == client && f.Flip.Function == "ngx_unix_recv" {
					flip = &f
				}
			}
			if strings.Contains(line, `"probe":"ngx_http_upstream_finalize_request"`) {
				finalize = true
			}
		}
	}
	stopProbeOK(t, p)
	if flip == nil || !finalize {
		t.Fatalf("want the watch's flip in ngx_unix_recv for *%d and the finalize event (flip %v, finalize %v): %s", client, flip, finalize, p)
	}
	if flip.Flip.Mode != "exact" || flip.Flip.Role != "upstream" || flip.Stack == nil {
		t.Errorf("flip from a script: %s", flip)
	}
}

// Each way of reaching the write sites (uprobe_multi on Linux 6.6, a
// uprobe per site with a BPF cookie on 5.15, a program per site before
// that) finds the same flip: the wss backend's FIN at the rev->eof = 1
// line. The host has every feature, so --attach forces each; the kernel
// matrix checks that auto picks the right one on older kernels.
func TestWatchAttachModes(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	first := sourceLine(t, inst, "src/os/unix/ngx_recv.c", "rev->eof = 1;")
	eofLine := nextSourceLine(t, inst, "src/os/unix/ngx_recv.c", "rev->eof = 1;", first)
	sc := incidents.WSSBackendClose(t)
	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: sc.HTTP})
	for _, c := range []struct{ attach, says string }{
		{"multi", "uprobe_multi link per site shape"},
		{"cookie", "a uprobe per site, the site in its BPF cookie"},
		{"per-site", "a uprobe and a program per site"},
	} {
		t.Run(c.attach, func(t *testing.T) {
			start := time.Now()
			p := startProbe(t, "watch", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", "--attach", c.attach, "c->read->eof")
			attached := time.Since(start)
			if !strings.Contains(p.stderr.String(), c.says) {
				t.Errorf("the attach line does not say %q: %s", c.says, p)
			}
			res := sc.Trigger(t)
			client := int64(sc.Check(t, srv, res).Access.Connection)
			match := func(f FlipEvent) bool {
				return f.Flip.New == 1 && f.Flip.Role == "upstream" && f.Flip.LoggedAs == client && f.Flip.Function == "ngx_unix_recv"
			}
			fs := waitFlips(t, p, eventTimeout, func(fs []FlipEvent) bool {
				for _, f := range fs {
					if match(f) {
						return true
					}
				}
				return false
			})
			stopProbeOK(t, p)
			var got *FlipEvent
			for i := range fs {
				if match(fs[i]) {
					got = &fs[i]
				}
			}
			if got == nil {
				t.Fatalf("--attach %s: no upstream eof flip for client *%d:\n%s\n%s", c.attach, client, flipList(fs), p)
			}
			if got.Flip.Line != eofLine || !got.hasFrame("ngx_http_upstream_process_upgraded") {
				t.Errorf("--attach %s: flip at line %d (want %d), stack %s", c.attach, got.Flip.Line, eofLine, got)
			}
			checkSummary(t, p)
			t.Logf("--attach %s: attached in %v", c.attach, attached.Round(time.Millisecond))
		})
	}
}
