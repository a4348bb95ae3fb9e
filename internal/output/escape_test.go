package output

import (
	"bufio"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ngx_unix_recv+0xbc (src/os/unix/ngx_recv.c:75)", "ngx_unix_recv+0xbc (src/os/unix/ngx_recv.c:75)"},
		{"h\u00e9llo \u2713 \u4e16", "h\u00e9llo \u2713 \u4e16"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"\x1b]0;title\x07", `\x1b]0;title\a`},
		{"a\x9b2Jb", `a\x9b2Jb`}, // C1 CSI as a byte that is not UTF-8
		{"a\u009b2Jb", `a\u009b2Jb`},
		{"bell\a back\b cr\r nl\n tab\t nul\x00 del\x7f", `bell\a back\b cr\r nl\n tab\t nul\x00 del\x7f`},
		{"line\u2028sep\u2029 \u202eoverride", `line\u2028sep\u2029 \u202eoverride`},
		{"\xff\xfe", `\xff\xfe`},
	} {
		got := Escape(c.in)
		if got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
		// Quoted strings (values) and escaped ones are left as they are.
		if q := strconv.Quote(c.in); Escape(q) != q {
			t.Errorf("Escape(Quote(%q)) = %q, want it unchanged", c.in, Escape(q))
		}
		if Escape(got) != got {
			t.Errorf("Escape(%q) = %q, want it unchanged", got, Escape(got))
		}
	}
	if got := escapeMessage("a\tb\x1b[2J\r"); got != "a\tb\\x1b[2J\\r" {
		t.Errorf("escapeMessage = %q", got)
	}
}

// hostile is a string from the traced process or the binary that tries
// to act on the terminal: colours (CSI), a window title (OSC), the C1
// CSI as a raw byte and as UTF-8, a bell, a backspace and a carriage
// return overwriting what came before, a forged output line, a line
// separator and a bidirectional override.
const hostile = "x\x1b[31mRED\x1b]0;title\x07\x9b2J\u009b2J\a\bover\rwrite\nFORGED line\x7f\u2028\u202e"

// rawControls are what no output may hold raw.
var rawControls = []string{"\x1b", "\x07", "\x08", "\r", "\x7f", "\x9b", "\u009b", "\u2028", "\u202e"}

// Every string that comes from the traced process or the binary is
// escaped in text and JSON: values, messages, stack frames, flips,
// aggregation keys and the summary.
func TestNoRawControls(t *testing.T) {
	st := &Stack{
		Frames:    []Frame{{Module: "lib" + hostile + ".so", Address: 0x10, Symbol: "sym" + hostile, Offset: 4, File: "src/" + hostile + ".c", Line: 3}, {Module: hostile}},
		Truncated: true, Reason: "reason " + hostile, Notes: []string{"note " + hostile},
	}
	ev := Event{
		Time: at, PID: 1, TID: 2, Probe: "p" + hostile, Function: "f" + hostile, Clone: true,
		Values: []Value{
			{Name: "line", Expr: "r->request_line", Readable: true, Data: hostile, Text: hostile},
			{Name: "n" + hostile, Expr: "e" + hostile, Group: "g" + hostile, Readable: true, Data: "ok", Text: strconv.Quote(hostile)},
			{Name: "addr", Expr: "c->sockaddr", Readable: true, Data: "unix:/run/" + hostile, Text: "unix:/run/" + hostile},
		},
		Messages: []string{"msg " + hostile + "\nsecond " + hostile},
		Stack:    st,
	}
	flip := Flip{Time: at, PID: 1, Mode: "exact", Field: "c->read->eof", New: 1, Conn: 2, Role: "upstream", LoggedAs: 1,
		Client: "client" + hostile, Function: "fn" + hostile, File: "file" + hostile, Line: 9, Site: "site" + hostile, Stack: st}
	diff := Flip{Time: at, Mode: "diff", Field: "c->error", Role: "client", Client: hostile, Function: "fn" + hostile, From: "from" + hostile, To: "to" + hostile}
	aggs := []Aggregate{{Name: "m", Func: "count", KeyNames: []string{"r->request_line"}, Rows: []AggregateRow{
		{Keys: []Key{{Readable: true, Data: hostile, Text: hostile}}, Count: 1},
		{Keys: []Key{{Readable: true, Data: "q", Text: strconv.Quote(hostile)}}, Count: 2},
	}}}
	sum := Summary{Probes: []ProbeCount{{Probe: "p" + hostile, Function: "f" + hostile, Hits: 1, Events: 1}}}
	for _, c := range []struct {
		name string
		do   func(Printer) error
	}{
		{"event", func(p Printer) error { return p.Event(ev) }},
		{"exact flip", func(p Printer) error { return p.Flip(flip) }},
		{"diff flip", func(p Printer) error { return p.Flip(diff) }},
		{"aggregates", func(p Printer) error { return p.Aggregates(aggs) }},
		{"summary", func(p Printer) error { return p.Summary(sum) }},
	} {
		for _, format := range Formats {
			t.Run(c.name+"/"+format, func(t *testing.T) {
				out := print(t, format, c.do)
				for _, raw := range rawControls {
					if strings.Contains(out, raw) {
						t.Errorf("output has %q raw:\n%s", raw, out)
					}
				}
				sc := bufio.NewScanner(strings.NewReader(out))
				for sc.Scan() {
					line := sc.Text()
					if strings.HasPrefix(line, "FORGED") {
						t.Errorf("a newline from the process started an output line:\n%s", out)
					}
					if format == "json" && !json.Valid([]byte(line)) {
						t.Errorf("not valid JSON: %s", line)
					}
				}
				if format == "text" && !strings.Contains(out, `\x1b[31mRED\x1b]0;title\a\x9b2J\u009b2J\a\bover\rwrite\nFORGED line\x7f\u2028\u202e`) {
					t.Errorf("text output lacks the escaped string:\n%s", out)
				}
			})
		}
	}
}

// JSON keeps the string's runes, escaped: decoding gives them back (a
// byte that is not UTF-8 becomes U+FFFD, as encoding/json has it).
func TestJSONSafeRoundTrip(t *testing.T) {
	out := print(t, "json", func(p Printer) error {
		return p.Event(Event{Time: at, Probe: "f", Function: "f", Values: []Value{{Name: "s", Expr: "s", Readable: true, Data: hostile}}, Messages: []string{hostile}})
	})
	var ev struct {
		Values []struct {
			Value string `json:"value"`
		} `json:"values"`
		Messages []string `json:"messages"`
	}
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := strings.ToValidUTF8(hostile, "\ufffd")
	if len(ev.Values) != 1 || ev.Values[0].Value != want || len(ev.Messages) != 1 || ev.Messages[0] != want {
		t.Errorf("decoded %+v, want %q", ev, want)
	}
	for _, esc := range []string{`\u001b[31m`, `\u0007`, `\u009b`, `\u007f`, `\u2028`, `\u202e`, `\ufffd2J`} {
		if !strings.Contains(out, esc) {
			t.Errorf("JSON lacks %s: %s", esc, out)
		}
	}
	if b := []byte(`{"a":"plain ascii"}`); string(jsonSafe(b)) != string(b) {
		t.Errorf("jsonSafe changed plain JSON")
	}
	if got := string(jsonSafe([]byte("\"\U0001F600\U000E0001\""))); got != "\"\U0001F600\\udb40\\udc01\"" {
		t.Errorf("jsonSafe of a printable and a tag rune = %q", got)
	}
}
