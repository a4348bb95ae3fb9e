package otlp

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"

	"github.com/ngxprobe/ngxprobe/internal/output"
)

// Event names, one per kind of record.
const (
	EventName     = "ngxprobe.event"
	FlipName      = "ngxprobe.flip"
	AggregateName = "ngxprobe.aggregate"
	SummaryName   = "ngxprobe.summary"
)

// Attribute keys. The semantic-convention ones are spelled as the issue
// (and most backends' dashboards) know them.
const (
	KeyProbe       = "ngxprobe.probe"
	KeyClone       = "ngxprobe.clone"
	KeyValuePrefix = "ngxprobe.value."
	KeyUnreadable  = "ngxprobe.unreadable"
	KeyMessages    = "ngxprobe.messages"

	KeyFlipField = "ngxprobe.flip.field"
	KeyFlipMode  = "ngxprobe.flip.mode"
	KeyFlipOld   = "ngxprobe.flip.old"
	KeyFlipNew   = "ngxprobe.flip.new"
	KeyFlipConn  = "ngxprobe.flip.conn"
	KeyFlipRole  = "ngxprobe.flip.role"
	KeyFlipSite  = "ngxprobe.flip.site"
	KeyFlipFrom  = "ngxprobe.flip.from"
	KeyFlipTo    = "ngxprobe.flip.to"

	KeyAggName      = "ngxprobe.aggregate.name"
	KeyAggFunc      = "ngxprobe.aggregate.func"
	KeyAggValue     = "ngxprobe.aggregate.value"
	KeyAggCount     = "ngxprobe.aggregate.count"
	KeyAggSum       = "ngxprobe.aggregate.sum"
	KeyAggMin       = "ngxprobe.aggregate.min"
	KeyAggMax       = "ngxprobe.aggregate.max"
	KeyAggKeyPrefix = "ngxprobe.aggregate.key."

	KeyHits    = "ngxprobe.hits"
	KeyEvents  = "ngxprobe.events"
	KeyLost    = "ngxprobe.lost"
	KeyDropped = "ngxprobe.dropped"
	KeyProbes  = "ngxprobe.probes"

	KeyConnection  = "nginx.connection.number"
	KeyPeerAddress = "network.peer.address"
	KeyPeerPort    = "network.peer.port"
	KeyFunction    = "code.function"
	KeyFilePath    = "code.filepath"
	KeyLineNo      = "code.lineno"
	KeyStacktrace  = "code.stacktrace"
	KeyPID         = "process.pid"
	KeyTID         = "thread.id"
)

// record is one log record before the SDK adds resource and scope. An
// event's or flip's Observed is set when it is queued.
type record struct {
	Time, Observed time.Time
	Name           string
	Severity       log.Severity
	Body           string
	Attrs          []attribute.KeyValue
}

func (r record) logRecord() log.Record {
	var lr log.Record
	lr.SetEventName(r.Name)
	lr.SetTimestamp(r.Time)
	lr.SetObservedTimestamp(r.Observed)
	lr.SetSeverity(r.Severity)
	lr.SetSeverityText(severityText(r.Severity))
	lr.SetBody(attribute.StringValue(r.Body))
	lr.AddAttributes(r.Attrs...)
	return lr
}

func severityText(s log.Severity) string {
	if s >= log.SeverityWarn {
		return "WARN"
	}
	return "INFO"
}

// attrs builds a record's attributes; every string is made valid UTF-8
// (protobuf refuses a batch with one that is not).
type attrs []attribute.KeyValue

func (a *attrs) str(k, v string) { *a = append(*a, attribute.String(k, validUTF8(v))) }
func (a *attrs) int(k string, v int64) {
	*a = append(*a, attribute.Int64(k, v))
}

func (a *attrs) strs(k string, v []string) {
	out := make([]string, len(v))
	for i, s := range v {
		out[i] = validUTF8(s)
	}
	*a = append(*a, attribute.StringSlice(k, out))
}

// uint adds v as an int64, or as its decimal string past math.MaxInt64.
func (a *attrs) uint(k string, v uint64) {
	if v > math.MaxInt64 {
		a.str(k, strconv.FormatUint(v, 10))
		return
	}
	a.int(k, int64(v))
}

// data adds a decoded value, typed: int64 (uint64 past its range as a
// decimal string), string, bool; a pointer as its "0x..." string.
func (a *attrs) data(k string, v any) {
	switch d := v.(type) {
	case int64:
		a.int(k, d)
	case uint64:
		a.uint(k, d)
	case int:
		a.int(k, int64(d))
	case bool:
		*a = append(*a, attribute.Bool(k, d))
	case string:
		a.str(k, d)
	case output.Pointer:
		a.str(k, d.String())
	case nil:
	default:
		a.str(k, fmt.Sprint(d))
	}
}

// validUTF8 is s with every byte that is not UTF-8 replaced by U+FFFD, as
// the JSON printer (encoding/json) does.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func clampInt(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

// valueKey is a value's attribute name: its group's words and its name,
// joined by dots ("client read" and eof: client.read.eof). Names repeat
// across groups (the default probes read conn, eof and error for client
// and upstream alike), and a record keeps one value per key.
func valueKey(group, name string) string {
	parts := strings.Fields(group)
	parts = append(parts, strings.Fields(name)...)
	if len(parts) == 0 {
		return "?"
	}
	return strings.Join(parts, ".")
}

// unique returns k, or k_2, k_3... when k was used already.
func unique(seen map[string]bool, k string) string {
	u := k
	for i := 2; seen[u]; i++ {
		u = k + "_" + strconv.Itoa(i)
	}
	seen[u] = true
	return u
}

// eventRecord maps an event (see the package documentation).
func eventRecord(ev output.Event) record {
	var a attrs
	a.str(KeyProbe, ev.Probe)
	a.str(KeyFunction, ev.Function)
	if ev.Clone {
		a = append(a, attribute.Bool(KeyClone, true))
	}
	if f := firstFileFrame(ev.Stack); f != nil {
		a.str(KeyFilePath, f.File)
		a.int(KeyLineNo, int64(f.Line))
	}
	seen := map[string]bool{}
	var unreadable []string
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		k := unique(seen, valueKey(v.Group, v.Name))
		if !v.Readable {
			unreadable = append(unreadable, k)
			continue
		}
		a.data(KeyValuePrefix+k, v.Data)
	}
	if len(unreadable) > 0 {
		a.strs(KeyUnreadable, unreadable)
	}
	if n, ok := eventConnection(ev.Values); ok {
		a.int(KeyConnection, n)
	}
	if addr, port, ok := eventPeer(ev.Values); ok {
		a.str(KeyPeerAddress, addr)
		if port > 0 {
			a.int(KeyPeerPort, int64(port))
		}
	}
	a.int(KeyPID, int64(ev.PID))
	a.int(KeyTID, int64(ev.TID))
	if len(ev.Messages) > 0 {
		a.strs(KeyMessages, ev.Messages)
	}
	if ev.Stack != nil {
		a.str(KeyStacktrace, stackText(ev.Stack))
	}
	return record{Time: ev.Time, Name: EventName, Severity: log.SeverityInfo, Body: eventBody(ev), Attrs: a}
}

// firstFileFrame is the first native frame with a source file: where the
// probed function was called from, or the probed function itself.
func firstFileFrame(st *output.Stack) *output.Frame {
	if st == nil {
		return nil
	}
	for i := range st.Frames {
		if f := &st.Frames[i]; f.Lua == nil && f.File != "" {
			return f
		}
	}
	return nil
}

// eventConnection is the *N of an event: the value read from a
// connection's log (c->log->connection, the number the error log shows,
// its client's for an upstream connection), else the first connection
// number.
func eventConnection(vs []output.Value) (int64, bool) {
	var first *output.Value
	for i := range vs {
		v := &vs[i]
		if !v.Readable || v.Display != output.Connection {
			continue
		}
		if strings.HasSuffix(v.Expr, "log->connection") {
			return asInt(v.Data)
		}
		if first == nil {
			first = v
		}
	}
	if first == nil {
		return 0, false
	}
	return asInt(first.Data)
}

func asInt(d any) (int64, bool) {
	switch n := d.(type) {
	case int64:
		return n, true
	case uint64:
		return clampInt(n), true
	}
	return 0, false
}

// eventPeer is the peer of an event: the first socket address read (a
// sockaddr value, shown unquoted as ip:port or unix:path), else the first
// c->addr_text (an address without a port).
func eventPeer(vs []output.Value) (addr string, port int, ok bool) {
	for _, v := range vs {
		if s, isStr := v.Data.(string); isStr && v.Readable && v.Text == s {
			if addr, port, ok := parsePeer(s); ok {
				return addr, port, true
			}
		}
	}
	for _, v := range vs {
		if s, isStr := v.Data.(string); isStr && v.Readable && strings.HasSuffix(v.Expr, "addr_text") && s != "" {
			return s, 0, true
		}
	}
	return "", 0, false
}

// parsePeer splits ip:port (IPv6 in brackets) or unix:path.
func parsePeer(s string) (addr string, port int, ok bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), true
	}
	if p, isUnix := strings.CutPrefix(s, "unix:"); isUnix {
		return p, 0, true
	}
	return "", 0, false
}

// eventBody is the event on one line, its values as the text printer
// shows them (*N, ? for unreadable, - for a group with nothing readable),
// then its printf lines; every part escaped.
func eventBody(ev output.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s pid %d", output.Escape(ev.Probe), ev.PID)
	if ev.TID != ev.PID {
		fmt.Fprintf(&b, " tid %d", ev.TID)
	}
	if ev.Clone {
		fmt.Fprintf(&b, " (%s)", output.Escape(ev.Function))
	}
	var groups []string
	parts := map[string][]string{}
	readable := map[string]bool{}
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		if _, ok := parts[v.Group]; !ok {
			groups = append(groups, v.Group)
		}
		parts[v.Group] = append(parts[v.Group], output.Escape(v.Name)+"="+output.Escape(displayText(v)))
		readable[v.Group] = readable[v.Group] || v.Readable
	}
	sep := ": "
	for _, g := range groups {
		line := strings.Join(parts[g], " ")
		if !readable[g] {
			if parent, _, ok := strings.Cut(g, " "); ok && !readable[parent] {
				continue
			}
			line = "-"
		}
		b.WriteString(sep)
		sep = "; "
		if g != "" {
			b.WriteString(output.Escape(g) + ": ")
		}
		b.WriteString(line)
	}
	for _, m := range ev.Messages {
		for _, line := range strings.Split(strings.TrimSuffix(m, "\n"), "\n") {
			b.WriteString(" | " + output.Escape(line))
		}
	}
	return b.String()
}

func displayText(v output.Value) string {
	switch {
	case !v.Readable:
		return "?"
	case v.Display == output.Connection:
		return "*" + v.Text
	}
	return v.Text
}

// flipRecord maps a flip (see the package documentation).
func flipRecord(f output.Flip) record {
	var a attrs
	a.str(KeyFlipField, f.Field)
	a.str(KeyFlipMode, f.Mode)
	a.uint(KeyFlipOld, f.Old)
	a.uint(KeyFlipNew, f.New)
	a.int(KeyFlipConn, f.Conn)
	if f.Role != "" {
		a.str(KeyFlipRole, f.Role)
	}
	if f.Function != "" {
		a.str(KeyFunction, f.Function)
	}
	if f.File != "" {
		a.str(KeyFilePath, f.File)
		if f.Line > 0 {
			a.int(KeyLineNo, int64(f.Line))
		}
	}
	if f.Site != "" {
		a.str(KeyFlipSite, f.Site)
	}
	if f.From != "" || f.To != "" {
		a.str(KeyFlipFrom, f.From)
		a.str(KeyFlipTo, f.To)
	}
	switch {
	case f.LoggedAs != 0:
		a.int(KeyConnection, f.LoggedAs)
	case f.Conn != 0:
		a.int(KeyConnection, f.Conn)
	}
	if f.Client != "" {
		if addr, port, ok := parsePeer(f.Client); ok {
			a.str(KeyPeerAddress, addr)
			if port > 0 {
				a.int(KeyPeerPort, int64(port))
			}
		} else {
			a.str(KeyPeerAddress, f.Client)
		}
	}
	a.int(KeyPID, int64(f.PID))
	a.int(KeyTID, int64(f.TID))
	if f.Stack != nil {
		a.str(KeyStacktrace, stackText(f.Stack))
	}
	return record{Time: f.Time, Name: FlipName, Severity: log.SeverityInfo, Body: flipBody(f), Attrs: a}
}

// flipBody is the text printer's two lines for a flip, on one line.
func flipBody(f output.Flip) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d flip %s %d -> %d conn *%d %s", f.PID, output.Escape(f.Field), f.Old, f.New, f.Conn, output.Escape(f.Role))
	switch {
	case f.Role == "upstream" && f.LoggedAs != f.Conn:
		fmt.Fprintf(&b, " (of *%d", f.LoggedAs)
		if f.Client != "" {
			fmt.Fprintf(&b, ", client %s", output.Escape(f.Client))
		}
		b.WriteString(")")
	case f.Client != "":
		fmt.Fprintf(&b, " (client %s)", output.Escape(f.Client))
	}
	fmt.Fprintf(&b, " [%s]", output.Escape(f.Mode))
	switch {
	case f.Mode == "exact":
		fmt.Fprintf(&b, " at %s:%d in %s (%s)", output.Escape(f.File), f.Line, output.Escape(f.Function), output.Escape(f.Site))
	case f.Function != "":
		fmt.Fprintf(&b, " inside %s (seen at %s, then at %s)", output.Escape(f.Function), output.Escape(f.From), output.Escape(f.To))
	default:
		fmt.Fprintf(&b, " between %s and %s", output.Escape(f.From), output.Escape(f.To))
	}
	return b.String()
}

// stackText is a stack as the text printer shows it, one frame a line:
// "address: symbol+offset (file:line)", the module for code without
// DWARF, "[lua] ..." for a Lua frame, then a truncation and notes.
func stackText(st *output.Stack) string {
	var b strings.Builder
	for _, f := range st.Frames {
		if f.Lua != nil {
			fmt.Fprintf(&b, "[lua] %s\n", output.Escape(f.Lua.Text))
			continue
		}
		name := output.Escape(f.Symbol)
		switch {
		case name == "":
			name = "??"
		case f.Inlined:
			name += " (inlined)"
		default:
			name = fmt.Sprintf("%s+%#x", name, f.Offset)
		}
		where := output.Escape(f.Module)
		if f.File != "" {
			where = fmt.Sprintf("%s:%d", output.Escape(f.File), f.Line)
		}
		fmt.Fprintf(&b, "%x: %s (%s)\n", f.Address, name, where)
	}
	if st.Truncated {
		fmt.Fprintf(&b, "... truncated: %s\n", output.Escape(st.Reason))
	}
	for _, n := range st.Notes {
		fmt.Fprintf(&b, "note: %s\n", output.Escape(n))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// aggregateRecords maps an aggregation: one record per row, rows whose
// keys print alike merged and sorted by value, as the other printers do.
// An aggregation without rows has no record.
func aggregateRecords(agg output.Aggregate, now time.Time) []record {
	rows, texts := output.MergedRows(agg)
	out := make([]record, 0, len(rows))
	for i, r := range rows {
		var a attrs
		a.str(KeyAggName, agg.Name)
		a.str(KeyAggFunc, agg.Func)
		a.int(KeyAggValue, r.Value(agg.Func))
		a.int(KeyAggCount, r.Count)
		a.int(KeyAggSum, r.Sum)
		a.int(KeyAggMin, r.Min)
		a.int(KeyAggMax, r.Max)
		seen := map[string]bool{}
		var unreadable []string
		for j, k := range r.Keys {
			name := "key" + strconv.Itoa(j)
			if j < len(agg.KeyNames) {
				name = valueKey("", agg.KeyNames[j])
			}
			name = unique(seen, name)
			if !k.Readable {
				unreadable = append(unreadable, name)
				continue
			}
			a.data(KeyAggKeyPrefix+name, k.Data)
		}
		if len(unreadable) > 0 {
			a.strs(KeyUnreadable, unreadable)
		}
		body := "@" + output.Escape(agg.Name)
		if len(agg.KeyNames) > 0 {
			body += "[" + output.Escape(texts[i]) + "]"
		}
		body += ": " + strconv.FormatInt(r.Value(agg.Func), 10)
		out = append(out, record{Time: now, Observed: now, Name: AggregateName, Severity: log.SeverityInfo, Body: body, Attrs: a})
	}
	return out
}

// summaryRecord maps the exit summary, with the records dropped before
// it. It is a warning when events were lost or records dropped.
func summaryRecord(s output.Summary, dropped uint64, now time.Time) record {
	hits, events, lost := s.Totals()
	var a attrs
	a.int(KeyHits, clampInt(hits))
	a.int(KeyEvents, clampInt(events))
	a.int(KeyLost, clampInt(lost))
	a.int(KeyDropped, clampInt(dropped))
	if len(s.Probes) > 0 {
		lines := make([]string, len(s.Probes))
		for i, p := range s.Probes {
			lines[i] = fmt.Sprintf("%s (%s): hits %d, events %d, lost %d", p.Probe, p.Function, p.Hits, p.Events, p.Lost)
		}
		a.strs(KeyProbes, lines)
	}
	sev := log.SeverityInfo
	if lost > 0 || dropped > 0 {
		sev = log.SeverityWarn
	}
	body := fmt.Sprintf("ngxprobe: detached; %d hits, %d events, %d lost, %d dropped", hits, events, lost, dropped)
	return record{Time: now, Observed: now, Name: SummaryName, Severity: sev, Body: body, Attrs: a}
}
