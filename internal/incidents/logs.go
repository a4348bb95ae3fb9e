package incidents

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// AwaitTimeout bounds how long Await waits for nginx's log lines.
const AwaitTimeout = 5 * time.Second

// LogLine is one nginx error-log line, e.g.
//
//	2026/11/23 10:00:00 [info] 1234#1234: *5 epoll_wait() reported ..., client: 203.0.113.7, server: , request: "GET /ws HTTP/1.1", upstream: "http://127.0.0.1:4242/ws", host: "localhost"
type LogLine struct {
	Raw   string // the whole line
	Time  string // "2026/11/23 10:00:00"
	Level string // "info", "error", ...
	PID   int
	TID   int
	// Conn is the connection number, the "*N" ($connection in the access
	// log); 0 when the line has none.
	Conn uint64
	// Message is everything after "*N " (or after "PID#TID: ").
	Message string
	// Text is Message without the ", client: ..." context nginx appends
	// for HTTP connections: what a scenario's ExpectLog is compared with.
	Text string
}

var logLineRE = regexp.MustCompile(`^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?(.*)$`)

// ParseLogLine parses one error-log line.
func ParseLogLine(line string) (LogLine, bool) {
	m := logLineRE.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
	if m == nil {
		return LogLine{}, false
	}
	l := LogLine{Raw: m[0], Time: m[1], Level: m[2], Message: m[6]}
	l.PID, _ = strconv.Atoi(m[3])
	l.TID, _ = strconv.Atoi(m[4])
	if m[5] != "" {
		l.Conn, _ = strconv.ParseUint(m[5], 10, 64)
	}
	l.Text = l.Message
	if i := strings.Index(l.Message, ", client: "); i >= 0 {
		l.Text = l.Message[:i]
	}
	return l, true
}

// ParseErrorLog parses every line of an error log that looks like one.
func ParseErrorLog(errorLog string) []LogLine {
	var out []LogLine
	for _, line := range strings.Split(errorLog, "\n") {
		if l, ok := ParseLogLine(line); ok {
			out = append(out, l)
		}
	}
	return out
}

// FindLogLine returns the first error-log line whose Message contains
// substr, with its "*N" connection number in Conn.
func FindLogLine(errorLog, substr string) (LogLine, bool) {
	for _, l := range ParseErrorLog(errorLog) {
		if strings.Contains(l.Message, substr) {
			return l, true
		}
	}
	return LogLine{}, false
}

// Field returns the value of a context field nginx appends to HTTP log
// lines ("client", "server", "request", "upstream", "host"), unquoted; ok
// is false when the line has no such field.
func (l LogLine) Field(name string) (string, bool) {
	i := strings.Index(l.Message, ", "+name+": ")
	if i < 0 {
		return "", false
	}
	v := l.Message[i+len(name)+4:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1], true
		}
		return v[1:], true
	}
	if j := strings.Index(v, ", "); j >= 0 {
		v = v[:j]
	}
	return v, true
}

// Observation is what nginx logged about one Trigger.
type Observation struct {
	// Access is the request's access-log entry.
	Access nginxtest.AccessEntry
	// Line is the error-log line of the incident: Text == ExpectLog, for
	// this request. Zero when the scenario expects no line.
	Line LogLine
	// Lines are all error-log lines of the request's connection
	// (Conn == Access.Connection), in order.
	Lines []LogLine
}

// Find looks for what nginx logged about res in the given logs: the
// access entry whose $request is res.Request and, when the scenario has an
// ExpectLog, the error-log line with that Text and request. ok is false
// while either is missing.
func (s *Scenario) Find(errorLog string, access []nginxtest.AccessEntry, res Result) (Observation, bool) {
	var o Observation
	found := false
	for _, e := range access {
		if e.Request == res.Request {
			o.Access, found = e, true
			break
		}
	}
	if !found {
		return o, false
	}
	lines := ParseErrorLog(errorLog)
	for _, l := range lines {
		if l.Conn == o.Access.Connection {
			o.Lines = append(o.Lines, l)
		}
	}
	if s.ExpectLog == "" {
		return o, true
	}
	for _, l := range lines {
		if req, _ := l.Field("request"); l.Text == s.ExpectLog && req == res.Request {
			o.Line = l
			return o, true
		}
	}
	return o, false
}

// Await waits up to AwaitTimeout for nginx to have logged res (see Find)
// and returns it; it fails the test, showing both logs, when nginx hasn't.
// It asserts nothing about the entries: see Check.
func (s *Scenario) Await(t testing.TB, srv *nginxtest.Server, res Result) Observation {
	t.Helper()
	deadline := time.Now().Add(AwaitTimeout)
	for {
		o, ok := s.Find(srv.ErrorLog(), srv.AccessEntries(), res)
		if ok {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("incidents: %s: after %v nginx has not logged %q (want error-log text %q)\n"+
				"--- error.log:\n%s--- access.log:\n%s",
				s.Name, AwaitTimeout, res.Request, s.ExpectLog, srv.ErrorLog(), srv.AccessLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Check is Await plus the scenario's assertions: the access-log status is
// ExpectStatus and, when ExpectLog is set, its line has ExpectLevel and
// the same connection number as the access entry.
func (s *Scenario) Check(t testing.TB, srv *nginxtest.Server, res Result) Observation {
	t.Helper()
	o := s.Await(t, srv, res)
	if o.Access.Status != s.ExpectStatus {
		t.Errorf("incidents: %s: access log status %d, want %d: %+v", s.Name, o.Access.Status, s.ExpectStatus, o.Access)
	}
	if s.ExpectLog != "" {
		if o.Line.Level != s.ExpectLevel {
			t.Errorf("incidents: %s: log level %q, want %q: %s", s.Name, o.Line.Level, s.ExpectLevel, o.Line.Raw)
		}
		if o.Line.Conn != o.Access.Connection {
			t.Errorf("incidents: %s: error log *%d, access log $connection %d\n%s",
				s.Name, o.Line.Conn, o.Access.Connection, o.Line.Raw)
		}
	}
	return o
}
