package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The printers encode events and flips by hand (appendEvent, appendFlip,
// Text.Event, Text.Flip). The functions below are how they were written
// before: encoding/json of jsonEvent and jsonFlip plus jsonSafe, and
// fmt with maps. The tests compare both, byte for byte, on generated
// events full of hostile strings.

func refJSONEvent(ev Event) ([]byte, error) {
	out := jsonEvent{
		Nginx:    toJSONOrigin(ev.Origin),
		Time:     jsonTime(ev.Time),
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe,
		Function: ev.Function,
		Values:   []jsonValue{},
		Messages: ev.Messages,
		Stack:    toJSONStack(ev.Stack),
	}
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		jv := jsonValue{Name: v.Name, Expr: v.Expr, Readable: v.Readable, Why: v.Why}
		if v.Readable {
			jv.Value = v.Data
			if v.Display == Role {
				jv.Role = v.Text
			}
		}
		out.Values = append(out.Values, jv)
	}
	return refLine(out)
}

func refJSONFlip(f Flip) ([]byte, error) {
	return refLine(jsonFlip{
		Nginx: toJSONOrigin(f.Origin),
		Time:  jsonTime(f.Time), PID: f.PID, TID: f.TID,
		Flip: jsonFlipBody{
			Mode: f.Mode, Field: f.Field, Old: f.Old, New: f.New, Conn: f.Conn, Role: f.Role, LoggedAs: f.LoggedAs,
			Client: f.Client, Function: f.Function, File: f.File, Line: f.Line, Site: f.Site, From: f.From, To: f.To,
		},
		Stack: toJSONStack(f.Stack),
	})
}

func refLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(jsonSafe(b), '\n'), nil
}

func refTextEvent(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s pid %d", ev.Time.Format(timeLayout), Escape(ev.Probe), ev.PID)
	if ev.TID != ev.PID {
		fmt.Fprintf(&b, " tid %d", ev.TID)
	}
	if ev.Clone {
		fmt.Fprintf(&b, " (%s)", Escape(ev.Function))
	}
	b.WriteByte('\n')
	refWriteOrigin(&b, ev.Origin)
	var groups []string
	lines := map[string][]string{}
	readable := map[string]bool{}
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		g := v.Group
		if _, ok := lines[g]; !ok {
			groups = append(groups, g)
		}
		lines[g] = append(lines[g], Escape(v.Name)+"="+Escape(refDisplayText(v)))
		readable[g] = readable[g] || v.Readable
	}
	for _, g := range groups {
		if !readable[g] {
			if parent, _, ok := strings.Cut(g, " "); ok && !readable[parent] {
				continue
			}
			fmt.Fprintf(&b, "  %-16s -\n", refLabel(g))
			continue
		}
		fmt.Fprintf(&b, "  %-16s %s\n", refLabel(g), strings.Join(lines[g], " "))
	}
	for _, m := range ev.Messages {
		for _, line := range strings.Split(strings.TrimSuffix(m, "\n"), "\n") {
			fmt.Fprintf(&b, "  %s\n", escapeMessage(line))
		}
	}
	refWriteStack(&b, ev.Stack)
	return b.String()
}

func refWriteOrigin(b *strings.Builder, o *Origin) {
	if o == nil {
		return
	}
	fmt.Fprintf(b, "  %-16s master %d %s", "nginx:", o.MasterPID, Escape(o.Binary))
	if o.ContainerID != "" {
		fmt.Fprintf(b, " container %s", Escape(o.ContainerID[:min(12, len(o.ContainerID))]))
	}
	if o.PodName != "" {
		fmt.Fprintf(b, " pod %s/%s", Escape(o.PodNamespace), Escape(o.PodName))
		if o.ContainerName != "" {
			fmt.Fprintf(b, " (%s)", Escape(o.ContainerName))
		}
	}
	b.WriteByte('\n')
}

func refDisplayText(v Value) string {
	switch {
	case !v.Readable:
		return "?"
	case v.Display == Connection:
		return "*" + v.Text
	}
	return v.Text
}

func refLabel(g string) string {
	if g == "" {
		return "values:"
	}
	return Escape(g) + ":"
}

func refTextFlip(f Flip) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s pid %d flip %s %d -> %d  conn *%d %s", f.Time.Format(timeLayout), f.PID, Escape(f.Field), f.Old, f.New, f.Conn, Escape(f.Role))
	switch {
	case f.Role == "upstream" && f.LoggedAs != f.Conn:
		fmt.Fprintf(&b, " (of *%d", f.LoggedAs)
		if f.Client != "" {
			fmt.Fprintf(&b, ", client %s", Escape(f.Client))
		}
		b.WriteString(")")
	case f.Client != "":
		fmt.Fprintf(&b, " (client %s)", Escape(f.Client))
	}
	fmt.Fprintf(&b, " [%s]\n", Escape(f.Mode))
	refWriteOrigin(&b, f.Origin)
	switch {
	case f.Mode == "exact":
		fmt.Fprintf(&b, "  at %s:%d in %s (%s)\n", Escape(f.File), f.Line, Escape(f.Function), Escape(f.Site))
	case f.Function != "":
		fmt.Fprintf(&b, "  inside %s (seen at %s, then at %s)\n", Escape(f.Function), Escape(f.From), Escape(f.To))
	default:
		fmt.Fprintf(&b, "  between %s and %s\n", Escape(f.From), Escape(f.To))
	}
	refWriteStack(&b, f.Stack)
	return b.String()
}

func refWriteStack(b *strings.Builder, st *Stack) {
	if st == nil {
		return
	}
	b.WriteString("  stack:\n")
	for _, f := range st.Frames {
		if f.Lua != nil {
			fmt.Fprintf(b, "    %8s  [lua] %s\n", "", Escape(f.Lua.Text))
			continue
		}
		name := Escape(f.Symbol)
		switch {
		case name == "":
			name = "??"
		case f.Inlined:
			name += " (inlined)"
		default:
			name = fmt.Sprintf("%s+%#x", name, f.Offset)
		}
		where := Escape(f.Module)
		if f.File != "" {
			where = fmt.Sprintf("%s:%d", Escape(f.File), f.Line)
		}
		fmt.Fprintf(b, "    %8x: %s (%s)\n", f.Address, name, where)
	}
	if st.Truncated {
		fmt.Fprintf(b, "    ... truncated: %s\n", Escape(st.Reason))
	}
	for _, n := range st.Notes {
		fmt.Fprintf(b, "    note: %s\n", Escape(n))
	}
}

// hostilePieces are what generated strings are made of: plain text, the
// characters JSON and HTML escape, every C0 control, DEL, C1 controls as
// raw bytes and as UTF-8, terminal escapes (CSI, OSC), separators,
// bidirectional overrides, invalid and truncated UTF-8, encoded
// surrogates, runes beyond U+FFFF printable and not, U+FFFD itself.
var hostilePieces = func() []string {
	p := []string{
		"", "a", "GET / HTTP/1.1", "127.0.0.1:8080", "client", "upstream", " ", "  ", "\t", "\n", "\r\n", "*",
		`"`, `\`, "<", ">", "&", "<script>&amp;</script>", "'", "%", "=", "?",
		"\x7f", "\x1b[31m", "\x1b[0m", "\x1b]0;title\x07", "\x1b]52;c;Zm9v\x1b\\", "\x9b2J", "\u009b2J", "\u0085",
		"\u00a0", "\u00ad", "\u2028", "\u2029", "\u202e", "\u200b", "\u2066", "\ufeff", "\ufffd", "\uffff",
		"\xff", "\xfe", "\xc3", "\xe2\x80", "\xf0\x9f\x98", "\xed\xa0\x80", "\xed\xbf\xbf", "\xc0\xaf", "\xf4\x90\x80\x80",
		"é", "世界", "\U0001F600", "\U000E0001", "\U0010FFFF", "\U000F0000",
	}
	for c := 0; c < 0x20; c++ {
		p = append(p, string(rune(c)))
	}
	for c := 0x80; c < 0xa0; c += 7 {
		p = append(p, string([]byte{byte(c)}), string(rune(c)))
	}
	return p
}()

func genString(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(6); n > 0; n-- {
		b.WriteString(hostilePieces[r.IntN(len(hostilePieces))])
	}
	return b.String()
}

// genOpt is a generated string, or often none (omitempty).
func genOpt(r *rand.Rand) string {
	if r.IntN(2) == 0 {
		return ""
	}
	return genString(r)
}

type marshalsItself struct{ s string }

func (m marshalsItself) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"m": m.s})
}

func genData(r *rand.Rand) any {
	switch r.IntN(14) {
	case 0:
		return nil
	case 1:
		return int64(r.Uint64())
	case 2:
		return []int64{0, -1, 1, 255, 256, math.MinInt64, math.MaxInt64}[r.IntN(7)]
	case 3:
		return r.Uint64()
	case 4:
		return []uint64{0, 1, 255, 256, math.MaxUint64}[r.IntN(5)]
	case 5, 6, 7:
		return genString(r)
	case 8:
		return Pointer(r.Uint64() >> r.IntN(64))
	case 9:
		return Pointer(0)
	case 10: // types the fast paths leave to encoding/json
		return []any{true, 1.5, int32(-7), 42, []string{"<a>", genString(r)}, map[string]int{"z": 1, "a&": 2}, marshalsItself{genString(r)}}[r.IntN(7)]
	case 11:
		return "client"
	}
	return genString(r)
}

var genGroups = []string{"", "request", "client", "client read", "client write", "upstream", "upstream read", "recv", "read", "orphan sub", "a b c", "é", "exactly16chars!", "longer than sixteen runes", "\x1b[31m", "g\u2028"}

func genValue(r *rand.Rand) Value {
	v := Value{
		Name: genString(r), Expr: genString(r), Display: Display(r.IntN(3)),
		Hidden: r.IntN(6) == 0, Readable: r.IntN(3) > 0, Data: genData(r), Text: genString(r),
	}
	if r.IntN(2) == 0 {
		v.Name, v.Expr = []string{"rc", "conn", "eof"}[r.IntN(3)], "r->connection->number"
	}
	if r.IntN(3) > 0 {
		v.Group = genGroups[r.IntN(len(genGroups))]
	} else {
		v.Group = genString(r)
	}
	if !v.Readable {
		v.Why = genOpt(r)
	}
	return v
}

func genStack(r *rand.Rand) *Stack {
	if r.IntN(3) > 0 {
		return nil
	}
	st := &Stack{Truncated: r.IntN(2) == 0, Reason: genOpt(r)}
	for n := r.IntN(4); n > 0; n-- {
		st.Notes = append(st.Notes, genString(r))
	}
	if r.IntN(4) == 0 {
		st.Notes = []string{} // empty, not nil: omitted all the same
	}
	for n := r.IntN(5); n > 0; n-- {
		f := Frame{Module: genString(r), Address: r.Uint64() >> r.IntN(64), Symbol: genOpt(r), Offset: r.Uint64() >> r.IntN(64), File: genOpt(r), Inlined: r.IntN(3) == 0}
		if r.IntN(2) == 0 {
			f.Line = r.IntN(3000) - 5
		}
		if r.IntN(4) == 0 {
			f.Lua = &LuaFrame{Kind: genString(r), Source: genOpt(r), Line: r.IntN(3) * r.IntN(100), FirstLine: r.IntN(3) - 1, Text: genString(r)}
		}
		st.Frames = append(st.Frames, f)
	}
	return st
}

func genOrigin(r *rand.Rand) *Origin {
	if r.IntN(3) > 0 {
		return nil
	}
	return &Origin{MasterPID: r.IntN(1<<22) - 1, Binary: genString(r), ContainerID: genOpt(r) + genOpt(r) + genOpt(r), PodName: genOpt(r), PodNamespace: genOpt(r), ContainerName: genOpt(r)}
}

var genZones = []*time.Location{time.UTC, time.Local, time.FixedZone("X", 5*3600+30*60), time.FixedZone("", -7*3600), time.FixedZone("S", 37)}

func genTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(4e9)-1e9, r.Int64N(1e9)).In(genZones[r.IntN(len(genZones))])
	switch r.IntN(6) {
	case 0:
		t = t.Truncate(time.Second)
	case 1:
		t = t.Truncate(time.Millisecond)
	}
	return t
}

func genEvent(r *rand.Rand) Event {
	ev := Event{
		Origin: genOrigin(r), Time: genTime(r), PID: r.Uint32(), Probe: genString(r), Function: genString(r), Clone: r.IntN(2) == 0, Stack: genStack(r),
	}
	ev.TID = ev.PID
	if r.IntN(2) == 0 {
		ev.TID = r.Uint32()
	}
	for n := r.IntN(12); n > 0; n-- {
		ev.Values = append(ev.Values, genValue(r))
	}
	for n := r.IntN(3); n > 0; n-- {
		ev.Messages = append(ev.Messages, genString(r)+[]string{"", "\n", "\n\n", "\nx\n"}[r.IntN(4)])
	}
	if r.IntN(8) == 0 {
		ev.Messages = []string{}
	}
	return ev
}

func genFlip(r *rand.Rand) Flip {
	f := Flip{
		Origin: genOrigin(r), Time: genTime(r), PID: r.Uint32(), TID: r.Uint32(),
		Mode: []string{"exact", "diff", genString(r)}[r.IntN(3)], Field: genString(r), Old: r.Uint64() >> r.IntN(64), New: r.Uint64() >> r.IntN(64),
		Conn: r.Int64N(1000) - 3, Role: []string{"client", "upstream", genString(r)}[r.IntN(3)], Client: genOpt(r),
		Function: genOpt(r), File: genOpt(r), Site: genOpt(r), From: genOpt(r), To: genOpt(r), Stack: genStack(r),
	}
	f.LoggedAs = f.Conn
	if r.IntN(2) == 0 {
		f.LoggedAs = r.Int64N(1000) - 3
	}
	if r.IntN(2) == 0 {
		f.Line = r.IntN(2000) - 3
	}
	return f
}

// checkEvent compares both printers with their references on ev. The
// printers are reused, as a trace reuses them.
func checkEvent(t *testing.T, tp *Text, jp *JSON, tb, jb *bytes.Buffer, ev Event) {
	t.Helper()
	tb.Reset()
	if err := tp.Event(ev); err != nil {
		t.Fatal(err)
	}
	if want := refTextEvent(ev); tb.String() != want {
		t.Fatalf("text of %#v:\n got %q\nwant %q", ev, tb.String(), want)
	}
	jb.Reset()
	err := jp.Event(ev)
	want, werr := refJSONEvent(ev)
	if (err != nil) != (werr != nil) {
		t.Fatalf("JSON of %#v: error %v, want %v", ev, err, werr)
	}
	if werr == nil && !bytes.Equal(jb.Bytes(), want) {
		t.Fatalf("JSON of %#v:\n got %s\nwant %s", ev, jb.Bytes(), want)
	}
}

func checkFlip(t *testing.T, tp *Text, jp *JSON, tb, jb *bytes.Buffer, f Flip) {
	t.Helper()
	tb.Reset()
	if err := tp.Flip(f); err != nil {
		t.Fatal(err)
	}
	if want := refTextFlip(f); tb.String() != want {
		t.Fatalf("text of %#v:\n got %q\nwant %q", f, tb.String(), want)
	}
	jb.Reset()
	if err := jp.Flip(f); err != nil {
		t.Fatal(err)
	}
	want, err := refJSONFlip(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(jb.Bytes(), want) {
		t.Fatalf("JSON of %#v:\n got %s\nwant %s", f, jb.Bytes(), want)
	}
}

// The hand-written printers write, for every generated event and flip,
// the bytes the reflective and fmt-based ones wrote.
func TestPrintersMatchReference(t *testing.T) {
	var tb, jb bytes.Buffer
	tp, jp := &Text{W: &tb}, &JSON{W: &jb}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	r := rand.New(rand.NewPCG(18, 2026))
	for range n {
		checkEvent(t, tp, jp, &tb, &jb, genEvent(r))
		checkFlip(t, tp, jp, &tb, &jb, genFlip(r))
	}
	checkEvent(t, tp, jp, &tb, &jb, defaultSetEvent())
	checkEvent(t, tp, jp, &tb, &jb, recvEvent())
	checkEvent(t, tp, jp, &tb, &jb, testEvent())
	checkEvent(t, tp, jp, &tb, &jb, Event{})
	// A value encoding/json cannot write is an error, and nothing is written.
	jb.Reset()
	if err := jp.Event(Event{Values: []Value{{Readable: true, Data: math.NaN()}}}); err == nil || jb.Len() != 0 {
		t.Errorf("NaN: error %v, wrote %q", err, jb.String())
	}
}

// appendJSONString writes every string as encoding/json and jsonSafe do;
// appendEscape as Escape does.
func TestStringEncodersMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var strs []string
	strs = append(strs, hostilePieces...)
	strs = append(strs, hostile)
	for c := range 0x110000 {
		if c%7 == 0 || c < 0x3000 {
			strs = append(strs, string(rune(c)))
		}
	}
	for b := range 256 {
		strs = append(strs, string([]byte{byte(b)}), "a"+string([]byte{byte(b), 0x80, 0x80})+"z")
	}
	for range 20000 {
		strs = append(strs, genString(r))
	}
	for _, s := range strs {
		checkString(t, s)
	}
}

func checkString(t *testing.T, s string) {
	t.Helper()
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(appendJSONString([]byte("x"), s)), "x"+string(jsonSafe(j)); got != want {
		t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
	}
	for _, keep := range []string{"", "\t"} {
		if got, want := string(appendEscape([]byte("x"), s, keep)), "x"+escape(s, keep); got != want {
			t.Fatalf("appendEscape(%q, %q) = %q, want %q", s, keep, got, want)
		}
	}
}

// FuzzPrinters puts a fuzzed string in every place of an event and a
// flip, and checks both printers against their references.
func FuzzPrinters(f *testing.F) {
	for _, s := range hostilePieces {
		f.Add(s, uint64(0))
	}
	f.Add(hostile, uint64(1))
	f.Add("GET /a?token=abc\x1b]0;t\x07\n\xff\u2028 HTTP/1.1", uint64(7))
	var tb, jb bytes.Buffer
	tp, jp := &Text{W: &tb}, &JSON{W: &jb}
	f.Fuzz(func(t *testing.T, s string, seed uint64) {
		checkString(t, s)
		r := rand.New(rand.NewPCG(seed, 0))
		ev := genEvent(r)
		ev.Probe, ev.Function = s, s
		ev.Values = append(ev.Values,
			Value{Name: s, Expr: s, Group: s, Readable: true, Data: s, Text: s, Display: Display(seed % 3)},
			Value{Name: s, Expr: s, Group: "client " + s, Why: s, Text: s},
			Value{Name: "p", Expr: "p", Group: s, Readable: true, Data: Pointer(seed), Text: s})
		ev.Messages = append(ev.Messages, s)
		ev.Stack = &Stack{Frames: []Frame{{Module: s, Symbol: s, File: s, Line: int(seed % 5)}, {Lua: &LuaFrame{Kind: s, Source: s, Text: s}}}, Reason: s, Notes: []string{s}, Truncated: seed%2 == 0}
		ev.Origin = &Origin{Binary: s, ContainerID: s, PodName: s, PodNamespace: s, ContainerName: s}
		checkEvent(t, tp, jp, &tb, &jb, ev)
		fl := genFlip(r)
		fl.Field, fl.Role, fl.Client, fl.Function, fl.File, fl.Site, fl.From, fl.To, fl.Mode = s, s, s, s, s, s, s, s, s
		fl.Stack, fl.Origin = ev.Stack, ev.Origin
		checkFlip(t, tp, jp, &tb, &jb, fl)
	})
}

// defaultSetEvent is an ngx_http_finalize_request event of the default
// probe set: 24 values in 9 groups, the upstream ones unreadable.
func defaultSetEvent() Event {
	ev := Event{Time: at, PID: 4242, TID: 4242, Probe: "ngx_http_finalize_request", Function: "ngx_http_finalize_request"}
	add := func(group, name, expr string, display Display, readable bool, data any, text string) {
		v := Value{Name: name, Expr: expr, Group: group, Display: display, Readable: readable, Data: data, Text: text}
		if !readable {
			v.Why, v.Text = "pointer load 2 of 3 faulted (NULL or unmapped)", "<unreadable>"
		}
		ev.Values = append(ev.Values, v)
	}
	add("request", "rc", "rc", Plain, true, int64(0), "0")
	add("request", "status", "r->headers_out.status", Plain, true, uint64(200), "200")
	add("request", "client", "r->connection->addr_text", Plain, true, "127.0.0.1", `"127.0.0.1"`)
	add("request", "request", "r->request_line", Plain, true, "GET / HTTP/1.1", `"GET / HTTP/1.1"`)
	add("client", "conn", "r->connection->number", Connection, true, uint64(12345), "12345")
	add("client", "role", "r->connection->listening", Role, true, "client", "client")
	for _, g := range []string{"client read", "client write"} {
		side := strings.TrimPrefix(g, "client ")
		add(g, "eof", "r->connection->"+side+"->eof", Plain, true, uint64(0), "0")
		add(g, "timedout", "r->connection->"+side+"->timedout", Plain, true, uint64(0), "0")
		add(g, "error", "r->connection->"+side+"->error", Plain, true, uint64(0), "0")
	}
	add("client conn", "error", "r->connection->error", Plain, true, uint64(0), "0")
	add("client conn", "timedout", "r->connection->timedout", Plain, true, uint64(0), "0")
	add("upstream", "conn", "r->upstream->peer.connection->number", Connection, false, nil, "")
	add("upstream", "role", "r->upstream->peer.connection->listening", Role, false, nil, "")
	for _, g := range []string{"upstream read", "upstream write"} {
		side := strings.TrimPrefix(g, "upstream ")
		add(g, "eof", "r->upstream->peer.connection->"+side+"->eof", Plain, false, nil, "")
		add(g, "timedout", "r->upstream->peer.connection->"+side+"->timedout", Plain, false, nil, "")
		add(g, "error", "r->upstream->peer.connection->"+side+"->error", Plain, false, nil, "")
	}
	add("upstream conn", "error", "r->upstream->peer.connection->error", Plain, false, nil, "")
	add("upstream conn", "timedout", "r->upstream->peer.connection->timedout", Plain, false, nil, "")
	return ev
}

// recvEvent is an ngx_unix_recv%return event of the default set: 7
// values in 2 groups.
func recvEvent() Event {
	return Event{Time: at, PID: 4242, TID: 4242, Probe: "ngx_unix_recv%return", Function: "ngx_unix_recv", Values: []Value{
		{Name: "ret", Expr: "$retval", Group: "recv", Readable: true, Data: int64(78), Text: "78"},
		{Name: "size", Expr: "size", Group: "recv", Readable: true, Data: uint64(1024), Text: "1024"},
		{Name: "conn", Expr: "c->number", Group: "recv", Display: Connection, Readable: true, Data: uint64(12345), Text: "12345"},
		{Name: "log", Expr: "c->log->connection", Group: "recv", Readable: true, Data: uint64(12345), Text: "12345"},
		{Name: "role", Expr: "c->listening", Group: "recv", Display: Role, Readable: true, Data: "client", Text: "client"},
		{Name: "eof", Expr: "c->read->eof", Group: "read", Readable: true, Data: uint64(0), Text: "0"},
		{Name: "error", Expr: "c->read->error", Group: "read", Readable: true, Data: uint64(0), Text: "0"},
	}}
}

// The per-event cost of each printer, on the default set's events.
// Reported allocs/op are the printer's own: the events are built once.
func BenchmarkEventJSON(b *testing.B) { benchPrinter(b, &JSON{W: io.Discard}) }
func BenchmarkEventText(b *testing.B) { benchPrinter(b, &Text{W: io.Discard}) }

// The same through the reflective and fmt-based references, to compare.
func BenchmarkEventJSONReference(b *testing.B) {
	benchPrinter(b, printerFunc(func(ev Event) error {
		line, err := refJSONEvent(ev)
		if err == nil {
			_, err = io.Discard.Write(line)
		}
		return err
	}))
}

func BenchmarkEventTextReference(b *testing.B) {
	benchPrinter(b, printerFunc(func(ev Event) error {
		_, err := io.WriteString(io.Discard, refTextEvent(ev))
		return err
	}))
}

type printerFunc func(Event) error

func (f printerFunc) Event(ev Event) error { return f(ev) }

func benchPrinter(b *testing.B, p interface{ Event(Event) error }) {
	evs := []Event{defaultSetEvent(), recvEvent(), recvEvent()}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := p.Event(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPrintersAllocate(t *testing.T) {
	for _, p := range []interface{ Event(Event) error }{&Text{W: io.Discard}, &JSON{W: io.Discard}} {
		for _, ev := range []Event{defaultSetEvent(), recvEvent()} {
			_ = p.Event(ev)
			if n := testing.AllocsPerRun(100, func() { _ = p.Event(ev) }); n != 0 {
				t.Errorf("%T.Event: %v allocations per event, want 0", p, n)
			}
		}
	}
}

// nameCache gives a string's encoding only for an equal string: not for
// a prefix with the same first byte, nor for another string in its slot.
func TestNameCache(t *testing.T) {
	backing := "r->connection->read->eof\x1b[31m<&>\u2028" + strings.Repeat("é", 300)
	var pool []string
	for i := 0; i <= len(backing); i += 3 {
		pool = append(pool, backing[:i], backing[i:], string([]byte(backing[:i])))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		pool = append(pool, genString(r))
	}
	var c nameCache
	for range 200000 {
		s := pool[r.IntN(len(pool))]
		if got, want := c.appendJSON([]byte("x"), s), appendJSONString([]byte("x"), s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON(%q) = %s, want %s", s, got, want)
		}
	}
}
