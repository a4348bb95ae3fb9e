package incidents

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

var variants = []string{nginxtest.VariantO2, nginxtest.VariantLTO}

// wantLines are the exact error-log texts each scenario must produce; they
// are spelled out here, apart from Scenario.ExpectLog, so that a changed
// ExpectLog can't pass unnoticed.
var wantLines = map[string]string{
	"wss-half-close":         "epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while sending request to upstream",
	"wss-backend-close":      "",
	"client-abort-499":       "epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while sending request to upstream",
	"reset-by-peer":          "recv() failed (104: Connection reset by peer) while sending to client",
	"upstream-mid-body":      "upstream prematurely closed connection while reading upstream",
	"upstream-before-header": "upstream prematurely closed connection while reading response header from upstream",
}

// checkClient asserts what the client and the upstream observed.
var checkClient = map[string]func(t *testing.T, s *Scenario, res Result, o Observation){
	"wss-half-close": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if res.Status != 0 || len(res.Response) != 0 {
			t.Errorf("client got a response: %q", res.Response)
		}
		// nginx closes without reading the client's close_notify: RST.
		if !res.Reset {
			t.Errorf("client connection not reset by nginx: EOF %v, err %v", res.EOF, res.ReadErr)
		}
		if !res.UpstreamDone || !res.Upstream.NginxClosed || res.Upstream.NginxReset || res.Upstream.Answered {
			t.Errorf("upstream: want a FIN from nginx before its 101, got done %v %+v", res.UpstreamDone, res.Upstream)
		}
		if got, _ := o.Line.Field("client"); got != FakeClientIP {
			t.Errorf("error log client %q, want the PROXY protocol address %s", got, FakeClientIP)
		}
		if res.Elapsed > WSSUpstreamDelay {
			t.Errorf("client took %v: nginx waited for the upstream", res.Elapsed)
		}
	},
	"wss-backend-close": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if res.Status != 101 || res.BodyBytes != 0 {
			t.Errorf("client got status %d, %d bytes after the header: %q", res.Status, res.BodyBytes, res.Response)
		}
		if !res.CloseNotify || !res.EOF {
			t.Errorf("client: want close_notify and FIN, got close_notify %v, EOF %v, err %v", res.CloseNotify, res.EOF, res.ReadErr)
		}
		if !res.UpstreamDone || !res.Upstream.Answered || res.Upstream.NginxClosed {
			t.Errorf("upstream: done %v %+v", res.UpstreamDone, res.Upstream)
		}
		if len(o.Lines) != 0 {
			t.Errorf("nginx logged for connection *%d:\n%s", o.Access.Connection, raws(o.Lines))
		}
	},
	"client-abort-499": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if !isTimeout(res.ReadErr) || res.Status != 0 {
			t.Errorf("client did not time out: status %d, err %v", res.Status, res.ReadErr)
		}
		if !res.UpstreamDone || !res.Upstream.NginxClosed || res.Upstream.NginxReset || res.Upstream.Answered {
			t.Errorf("upstream: want a FIN from nginx before its answer, got done %v %+v", res.UpstreamDone, res.Upstream)
		}
	},
	"reset-by-peer": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if res.Status != 200 || res.BodyBytes != 3 || !res.EOF {
			t.Errorf("client: status %d, %d body bytes, EOF %v (err %v)", res.Status, res.BodyBytes, res.EOF, res.ReadErr)
		}
		if string(res.Upstream.Body) != "0123456789" {
			t.Errorf("upstream got body %q", res.Upstream.Body)
		}
		if o.Access.BodyBytesSent != 3 {
			t.Errorf("$body_bytes_sent %d, want 3", o.Access.BodyBytesSent)
		}
	},
	"upstream-mid-body": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if res.Status != 200 || res.BodyBytes != 10 || !res.EOF {
			t.Errorf("client: status %d, %d body bytes, EOF %v (err %v)", res.Status, res.BodyBytes, res.EOF, res.ReadErr)
		}
		if !strings.Contains(string(res.Response), "Content-Length: 1000\r\n") {
			t.Errorf("client response lacks the upstream's Content-Length: %q", res.Response)
		}
		if o.Access.BodyBytesSent != 10 {
			t.Errorf("$body_bytes_sent %d, want 10", o.Access.BodyBytesSent)
		}
	},
	"upstream-before-header": func(t *testing.T, s *Scenario, res Result, o Observation) {
		if res.Status != 502 || !res.EOF {
			t.Errorf("client: status %d, EOF %v (err %v)", res.Status, res.EOF, res.ReadErr)
		}
		if !res.UpstreamDone || res.Upstream.Answered {
			t.Errorf("upstream: done %v %+v", res.UpstreamDone, res.Upstream)
		}
	},
}

func raws(lines []LogLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Raw + "\n")
	}
	return b.String()
}

// TestIncidents runs every scenario once on each nginx build, each with an
// nginx of its own, and checks the exact error-log line, its connection
// number against the access log's $connection, the status and what client
// and upstream saw.
func TestIncidents(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			inst := nginxtest.Build(t, v)
			for _, sc := range All() {
				t.Run(sc.Name, func(t *testing.T) {
					s := sc.New(t)
					if s.Name != sc.Name {
						t.Fatalf("scenario name %q, want %q", s.Name, sc.Name)
					}
					if s.ExpectLog != wantLines[s.Name] {
						t.Fatalf("ExpectLog %q, want %q", s.ExpectLog, wantLines[s.Name])
					}
					srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: s.HTTP})
					res := s.Trigger(t)
					o := s.Check(t, srv, res)
					if s.ExpectLog != "" {
						t.Logf("error log: %s", o.Line.Raw)
					}
					t.Logf("access log: %+v; client: status %d, %d body bytes, EOF %v, RST %v, close_notify %v, in %v",
						o.Access, res.Status, res.BodyBytes, res.EOF, res.Reset, res.CloseNotify, res.Elapsed.Round(time.Millisecond))
					if w := srv.WorkerPIDs(); len(w) != 1 || o.Access.PID != w[0] {
						t.Errorf("access log pid %d, workers %v", o.Access.PID, w)
					}
					checkClient[s.Name](t, s, res, o)
				})
			}
		})
	}
}

// TestRepeat triggers every scenario several times (reset-by-peer 20
// times) against one nginx that serves them all: each trigger must give
// its own connection and its own, matching, log lines.
func TestRepeat(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	var all []*Scenario
	var http strings.Builder
	for _, sc := range All() {
		s := sc.New(t)
		all = append(all, s)
		http.WriteString(s.HTTP)
	}
	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: http.String()})
	seen := map[uint64]string{}
	for _, s := range all {
		n := 3
		switch s.Name {
		case "reset-by-peer":
			n = 20
		case "client-abort-499":
			n = 2
		}
		for i := 0; i < n; i++ {
			res := s.Trigger(t)
			o := s.Check(t, srv, res)
			if prev, dup := seen[o.Access.Connection]; dup {
				t.Errorf("%s: connection *%d already used by %s", res.Request, o.Access.Connection, prev)
			}
			seen[o.Access.Connection] = res.Request
			if t.Failed() {
				t.Fatalf("%s: trigger %d failed: %+v", s.Name, i+1, res)
			}
		}
	}
}

// After a scenario's test, its upstream no longer accepts connections.
func TestCleanup(t *testing.T) {
	var addrs []string
	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range All() {
			s := sc.New(t)
			c, err := net.DialTimeout("tcp", s.Upstream, time.Second)
			if err != nil {
				t.Fatalf("%s: upstream %s: %v", s.Name, s.Upstream, err)
			}
			c.Close()
			addrs = append(addrs, s.Upstream)
		}
	})
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("upstream %s still accepts connections after cleanup", a)
		}
	}
}

func TestParseLogLine(t *testing.T) {
	line := `2026/11/23 10:00:00 [info] 1234#1235: *5 epoll_wait() reported that client prematurely closed connection, ` +
		`so upstream connection is closed too while sending request to upstream, client: 203.0.113.7, server: , ` +
		`request: "GET /ws/x/1 HTTP/1.1", upstream: "http://127.0.0.1:4242/ws/x/1", host: "localhost"`
	l, ok := ParseLogLine(line)
	if !ok {
		t.Fatal("no parse")
	}
	if l.Time != "2026/11/23 10:00:00" || l.Level != "info" || l.PID != 1234 || l.TID != 1235 || l.Conn != 5 {
		t.Errorf("%+v", l)
	}
	if l.Text != wantLines["wss-half-close"] {
		t.Errorf("Text %q", l.Text)
	}
	for name, want := range map[string]string{
		"client": "203.0.113.7", "server": "", "request": "GET /ws/x/1 HTTP/1.1",
		"upstream": "http://127.0.0.1:4242/ws/x/1", "host": "localhost",
	} {
		if got, ok := l.Field(name); !ok || got != want {
			t.Errorf("Field(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	if _, ok := l.Field("referrer"); ok {
		t.Error("Field(referrer) found")
	}

	l, ok = ParseLogLine("2026/11/23 10:00:00 [notice] 7#7: start worker processes")
	if !ok || l.Conn != 0 || l.Text != "start worker processes" || l.Level != "notice" {
		t.Errorf("%+v %v", l, ok)
	}
	if _, ok := ParseLogLine("nginx: [emerg] bind() failed"); ok {
		t.Error("parsed a stderr line")
	}

	log := "2026/11/23 10:00:00 [notice] 7#7: start worker processes\n" + line + "\n"
	if l, ok := FindLogLine(log, "prematurely closed"); !ok || l.Conn != 5 {
		t.Errorf("FindLogLine: %+v %v", l, ok)
	}
	if _, ok := FindLogLine(log, "reset by peer"); ok {
		t.Error("FindLogLine found a missing line")
	}
}
