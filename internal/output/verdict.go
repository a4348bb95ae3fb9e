package output

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Verdict explains one abnormal end of a connection or request (ngxprobe
// closes): who ended it, how, and the code that decided.
type Verdict struct {
	// Origin is set with --all-nginx.
	Origin *Origin
	Time   time.Time
	PID    uint32
	// Conn is the *N that the error log and the access log's $connection
	// use: the client connection's number (an upstream connection's
	// errors are logged under its client's *N). PeerConn is the paired
	// connection's *N, 0 when not known: the upstream connection for a
	// client verdict, and for an upstream verdict the upstream
	// connection itself.
	Conn, PeerConn uint64
	// Side is whose connection ended: "client" or "upstream".
	Side string
	// Peer is the address on the other end of that side's connection.
	Peer string
	// Initiator is who ended it: "client", "upstream" or "nginx".
	Initiator string
	// Cause is how, one of the closes package's causes ("fin", "rst",
	// "timeout", "tls", "return_444", ...); Phase is what nginx was
	// doing ("request_header", "upstream_header", ...).
	Cause, Phase string
	// Method, URI and Status are the request's, where there was one;
	// Status is what the access log records.
	Method, URI string
	Status      int
	// Errno is the socket error nginx saw (104 for a reset), 0 if none;
	// ErrorLog is the text nginx logged for it, when it did.
	Errno    int
	ErrorLog string
	// Summary is the verdict as one sentence.
	Summary string
	// Healthy marks the verdict of a healthy close (closes --all): its
	// Cause is then the healthy kind, as the counts name it.
	Healthy bool
	// DecidedAt is the code that decided: the innermost frame outside
	// nginx's generic close and finalize functions.
	DecidedAt *Frame
	// Via is the function the decision came through ("ngx_unix_recv ←
	// ngx_http_ssl_handshake"), when the stack shows it.
	Via   string
	Stack *Stack
}

// HealthyCount is how many connections ended healthily in one way.
type HealthyCount struct {
	Kind  string
	Count uint64
}

// Closes is the periodic and final count of a closes trace.
type Closes struct {
	Time     time.Time
	Verdicts uint64
	Healthy  []HealthyCount
	// Lost is how many events the kernel could not deliver: each may be
	// a verdict not printed or, with closes --all, a healthy close not
	// counted.
	Lost  uint64
	Final bool
}

// VerdictPrinter is implemented by printers that print closes' verdicts.
type VerdictPrinter interface {
	Verdict(Verdict) error
	Closes(Closes) error
}

// VerdictLine is a verdict as one line, without a newline: when, the
// connection's *N, side, peer and request, and the summary (marked
// healthy for a healthy close's). Text prints it first; an OTLP record
// has it as its body.
func VerdictLine(v Verdict) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s *%d %s", v.Time.Format("15:04:05.000"), v.Conn, Escape(v.Side))
	if v.Peer != "" {
		fmt.Fprintf(&b, " %s", Escape(v.Peer))
	}
	if v.Side == "upstream" && v.PeerConn != 0 {
		fmt.Fprintf(&b, " (*%d)", v.PeerConn)
	}
	if v.Method != "" {
		fmt.Fprintf(&b, " %s %s", Escape(v.Method), Escape(v.URI))
	}
	if v.Status != 0 {
		fmt.Fprintf(&b, " %d", v.Status)
	}
	healthy := ""
	if v.Healthy {
		healthy = "healthy (" + Escape(v.Cause) + "): "
	}
	fmt.Fprintf(&b, " — %s%s", healthy, Escape(v.Summary))
	return b.String()
}

// Verdict writes the verdict's line (VerdictLine), where it was decided,
// and the stack when there is one.
func (p *Text) Verdict(v Verdict) error {
	var b strings.Builder
	b.WriteString(VerdictLine(v))
	b.WriteByte('\n')
	writeOrigin(&b, v.Origin)
	if v.ErrorLog != "" {
		fmt.Fprintf(&b, "  error log: %s\n", Escape(v.ErrorLog))
	}
	if f := v.DecidedAt; f != nil && f.File == "" && f.Module == "" {
		// Named from the event handler that ran: no line is known.
		fmt.Fprintf(&b, "  decided in %s (the event handler that ran)", Escape(f.Symbol))
		if v.Via != "" {
			fmt.Fprintf(&b, " ← %s", Escape(v.Via))
		}
		b.WriteByte('\n')
	} else if f != nil {
		fmt.Fprintf(&b, "  decided at %s in %s", Escape(frameWhere(*f)), Escape(f.Symbol))
		if v.Via != "" {
			fmt.Fprintf(&b, " ← %s", Escape(v.Via))
		}
		b.WriteByte('\n')
	}
	writeStack(&b, v.Stack)
	_, err := io.WriteString(p.W, b.String())
	return err
}

func frameWhere(f Frame) string {
	if f.File != "" {
		return fmt.Sprintf("%s:%d", f.File, f.Line)
	}
	return fmt.Sprintf("%s+%#x", f.Module, f.Address)
}

// Closes writes the healthy closes by kind and the verdict count.
func (p *Text) Closes(c Closes) error {
	var b strings.Builder
	when := "so far"
	if c.Final {
		when = "in all"
	}
	var total uint64
	var parts []string
	for _, h := range c.Healthy {
		total += h.Count
		parts = append(parts, fmt.Sprintf("%s %d", Escape(h.Kind), h.Count))
	}
	fmt.Fprintf(&b, "ngxprobe: closes %s: %d abnormal (verdicts printed), %d healthy", when, c.Verdicts, total)
	if len(parts) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if c.Lost > 0 {
		fmt.Fprintf(&b, "; %d events lost (each a close that may be missing from the verdicts or the counts)", c.Lost)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.W, b.String())
	return err
}

type jsonVerdict struct {
	Nginx     *jsonOrigin `json:"nginx,omitempty"`
	Time      string      `json:"time"`
	PID       uint32      `json:"pid"`
	Conn      uint64      `json:"conn"`
	PeerConn  uint64      `json:"peer_conn,omitempty"`
	Side      string      `json:"side"`
	Peer      string      `json:"peer,omitempty"`
	Initiator string      `json:"initiator"`
	Cause     string      `json:"cause"`
	Phase     string      `json:"phase,omitempty"`
	Method    string      `json:"method,omitempty"`
	URI       string      `json:"uri,omitempty"`
	Status    int         `json:"status,omitempty"`
	Errno     int         `json:"errno,omitempty"`
	ErrorLog  string      `json:"error_log,omitempty"`
	Summary   string      `json:"summary"`
	Healthy   bool        `json:"healthy,omitempty"`
	DecidedAt *jsonFrame  `json:"decided_at,omitempty"`
	Via       string      `json:"via,omitempty"`
	Stack     *jsonStack  `json:"stack,omitempty"`
}

type jsonCloses struct {
	Time     string            `json:"time"`
	Final    bool              `json:"final"`
	Verdicts uint64            `json:"verdicts"`
	Healthy  map[string]uint64 `json:"healthy"`
	Lost     uint64            `json:"lost"`
}

// Verdict writes {"verdict": {...}} with the keys the README documents.
func (p *JSON) Verdict(v Verdict) error {
	out := jsonVerdict{
		Nginx: toJSONOrigin(v.Origin), Time: jsonTime(v.Time), PID: v.PID,
		Conn: v.Conn, PeerConn: v.PeerConn, Side: v.Side, Peer: v.Peer,
		Initiator: v.Initiator, Cause: v.Cause, Phase: v.Phase,
		Method: v.Method, URI: v.URI, Status: v.Status, Errno: v.Errno, ErrorLog: v.ErrorLog,
		Summary: v.Summary, Healthy: v.Healthy, Via: v.Via, Stack: toJSONStack(v.Stack),
	}
	if f := v.DecidedAt; f != nil {
		out.DecidedAt = &jsonFrame{Module: f.Module, Address: f.Address, Symbol: f.Symbol, Offset: f.Offset, File: f.File, Line: f.Line, Inlined: f.Inlined}
	}
	return p.line(map[string]jsonVerdict{"verdict": out})
}

// Closes writes {"closes": {...}}: healthy closes by kind.
func (p *JSON) Closes(c Closes) error {
	out := jsonCloses{Time: jsonTime(c.Time), Final: c.Final, Verdicts: c.Verdicts, Healthy: map[string]uint64{}, Lost: c.Lost}
	for _, h := range c.Healthy {
		out.Healthy[h.Kind] += h.Count
	}
	return p.line(map[string]jsonCloses{"closes": out})
}

// Every printer New makes prints verdicts.
var (
	_ VerdictPrinter = (*Text)(nil)
	_ VerdictPrinter = (*JSON)(nil)
)
