package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var at = time.Date(2026, 11, 30, 11, 2, 3, 123456000, time.UTC)

func testEvent() Event {
	return Event{
		Time: at, Probe: "f", Function: "f.lto_priv.0", Clone: true, PID: 7, TID: 8,
		Values: []Value{
			{Name: "conn", Expr: "c->number", Group: "client", Display: Connection, Readable: true, Text: "3", Data: uint64(3)},
			{Name: "role", Expr: "c->listening", Group: "client", Display: Role, Readable: true, Text: "client", Data: "client"},
			{Name: "eof", Expr: "c->read->eof", Group: "client read", Readable: true, Text: "1", Data: uint64(1)},
			{Name: "conn", Expr: "u->number", Group: "upstream", Why: "pointer load 1 of 1 faulted (NULL or unmapped)"},
			{Name: "eof", Expr: "u->read->eof", Group: "upstream read", Why: "pointer load 1 of 2 faulted (NULL or unmapped)"},
			{Name: "x", Expr: "c->fd", Hidden: true, Readable: true, Text: "9", Data: int64(9)},
		},
		Messages: []string{"fd 9\nsecond line\n"},
	}
}

func testStack() *Stack {
	return &Stack{Frames: []Frame{
		{Module: "nginx", Address: 0x4a6b0, Symbol: "ngx_unix_recv", Offset: 0xbc, File: "src/os/unix/ngx_recv.c", Line: 75},
		{Module: "nginx", Address: 0x4a6b0, Symbol: "ngx_inline", Inlined: true},
		{Module: "libc.so.6", Address: 0x27305},
	}, Truncated: true, Reason: "no CFI", Notes: []string{"module replaced"}}
}

func print(t *testing.T, format string, do func(Printer) error) string {
	t.Helper()
	var buf bytes.Buffer
	p, err := New(format, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := do(p); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestNewUnknownFormat(t *testing.T) {
	if _, err := New("yaml", nil); err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Errorf("New(yaml) = %v, want an error naming text and json", err)
	}
}

func TestText(t *testing.T) {
	withStack := testEvent()
	withStack.Stack = testStack()
	sameThread := testEvent()
	sameThread.TID, sameThread.Clone = 7, false
	for _, tc := range []struct {
		name   string
		do     func(Printer) error
		want   []string
		absent []string
	}{
		{
			name: "groups",
			do:   func(p Printer) error { return p.Event(testEvent()) },
			want: []string{
				"11:02:03.123456 f pid 7 tid 8 (f.lto_priv.0)\n",
				"  client:          conn=*3 role=client\n",
				"  client read:     eof=1\n",
				"  upstream:        -\n",
				"  fd 9\n  second line\n",
			},
			// An unreadable group's sub-groups are not printed; hidden values are not listed.
			absent: []string{"upstream read", "x=9"},
		},
		{
			name:   "same thread, not a clone",
			do:     func(p Printer) error { return p.Event(sameThread) },
			want:   []string{"11:02:03.123456 f pid 7\n"},
			absent: []string{"tid", "lto_priv"},
		},
		{
			name: "stack",
			do:   func(p Printer) error { return p.Event(withStack) },
			want: []string{
				"  stack:\n",
				"       4a6b0: ngx_unix_recv+0xbc (src/os/unix/ngx_recv.c:75)\n",
				"       4a6b0: ngx_inline (inlined) (nginx)\n",
				"       27305: ?? (libc.so.6)\n",
				"    ... truncated: no CFI\n",
				"    note: module replaced\n",
			},
		},
		{
			name: "exact flip of an upstream",
			do: func(p Printer) error {
				return p.Flip(Flip{Time: at, PID: 5, Mode: "exact", Field: "c->read->eof", Old: 0, New: 1, Conn: 2, Role: "upstream", LoggedAs: 1,
					Client: "203.0.113.7", Function: "ngx_unix_recv", File: "src/os/unix/ngx_recv.c", Line: 76, Site: "mov %ax,0x8(%r14)"})
			},
			want: []string{
				"11:02:03.123456 pid 5 flip c->read->eof 0 -> 1  conn *2 upstream (of *1, client 203.0.113.7) [exact]\n",
				"  at src/os/unix/ngx_recv.c:76 in ngx_unix_recv (mov %ax,0x8(%r14))\n",
			},
		},
		{
			name: "diff flip inside a function",
			do: func(p Printer) error {
				return p.Flip(Flip{Time: at, PID: 5, Mode: "diff", Field: "c->read->eof", New: 1, Conn: 1, LoggedAs: 1, Role: "client", Client: "127.0.0.1",
					Function: "ngx_unix_recv", From: "ngx_unix_recv", To: "ngx_unix_recv%return"})
			},
			want: []string{"conn *1 client (client 127.0.0.1) [diff]\n", "  inside ngx_unix_recv (seen at ngx_unix_recv, then at ngx_unix_recv%return)\n"},
		},
		{
			name: "diff flip between points",
			do: func(p Printer) error {
				return p.Flip(Flip{Time: at, Mode: "diff", Field: "c->error", New: 1, Role: "client", From: "a", To: "b"})
			},
			want: []string{"  between a and b\n"},
		},
		{
			name: "aggregates",
			do: func(p Printer) error {
				return p.Aggregates([]Aggregate{
					{Name: "by_status", Func: "count", KeyNames: []string{"rc"}, Rows: []AggregateRow{
						{Keys: []Key{{Readable: true, Text: "499", Data: int64(499)}}, Count: 3},
						{Keys: []Key{{Readable: true, Text: "200", Data: int64(200)}}, Count: 7},
						{Keys: []Key{{}}, Count: 1},
						{Keys: []Key{{Text: "ignored"}}, Count: 1},
					}},
					{Name: "none", Func: "sum"},
					{Name: "avg", Func: "avg", Rows: []AggregateRow{{Count: 4, Sum: 10}}},
				})
			},
			// Unreadable keys merge (1 + 1), rows sort by value, largest last.
			want: []string{"\n@by_status (count) by rc:\n  @by_status[?]: 2\n  @by_status[499]: 3\n  @by_status[200]: 7\n", "\n@none (sum):\n  (no hits)\n", "@avg: 2\n"},
		},
		{
			name: "summary",
			do: func(p Printer) error {
				return p.Summary(Summary{Probes: []ProbeCount{{Probe: "a", Function: "a", Hits: 3, Events: 2, Lost: 1}, {Probe: "b%return", Function: "b.isra.0", Hits: 4, Events: 4}}})
			},
			want: []string{"ngxprobe: detached; 7 hits, 6 events, 1 lost\n", "b.isra.0", "hits 4, events 4, lost 0\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := print(t, "text", tc.do)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("text output lacks %q:\n%s", w, out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("text output has %q:\n%s", a, out)
				}
			}
		})
	}
}

// The JSON keys are documented in the README as stable: each case is the
// whole line, byte for byte.
func TestJSON(t *testing.T) {
	ptr := testEvent()
	ptr.Values = []Value{{Name: "p", Expr: "c->data", Readable: true, Text: "0x55d0", Data: Pointer(0x55d0)}}
	withStack := ptr
	withStack.Stack = testStack()
	for _, tc := range []struct {
		name string
		do   func(Printer) error
		want string
	}{
		{
			name: "event",
			do:   func(p Printer) error { return p.Event(testEvent()) },
			want: `{"time":"2026-11-30T11:02:03.123456Z","pid":7,"tid":8,"probe":"f","function":"f.lto_priv.0","values":[` +
				`{"name":"conn","expr":"c->number","value":3,"readable":true},` +
				`{"name":"role","expr":"c->listening","value":"client","readable":true,"role":"client"},` +
				`{"name":"eof","expr":"c->read->eof","value":1,"readable":true},` +
				`{"name":"conn","expr":"u->number","value":null,"readable":false,"why":"pointer load 1 of 1 faulted (NULL or unmapped)"},` +
				`{"name":"eof","expr":"u->read->eof","value":null,"readable":false,"why":"pointer load 1 of 2 faulted (NULL or unmapped)"}],` +
				`"messages":["fd 9\nsecond line\n"]}`,
		},
		{
			name: "pointer and stack",
			do:   func(p Printer) error { return p.Event(withStack) },
			want: `{"time":"2026-11-30T11:02:03.123456Z","pid":7,"tid":8,"probe":"f","function":"f.lto_priv.0","values":[` +
				`{"name":"p","expr":"c->data","value":"0x55d0","readable":true}],"messages":["fd 9\nsecond line\n"],` +
				`"stack":{"frames":[{"module":"nginx","address":304816,"symbol":"ngx_unix_recv","offset":188,"file":"src/os/unix/ngx_recv.c","line":75},` +
				`{"module":"nginx","address":304816,"symbol":"ngx_inline","offset":0,"inlined":true},` +
				`{"module":"libc.so.6","address":160517,"symbol":"","offset":0}],"truncated":true,"reason":"no CFI","notes":["module replaced"]}}`,
		},
		{
			name: "no values",
			do:   func(p Printer) error { return p.Event(Event{Time: at, Probe: "f", Function: "f"}) },
			want: `{"time":"2026-11-30T11:02:03.123456Z","pid":0,"tid":0,"probe":"f","function":"f","values":[]}`,
		},
		{
			name: "flip",
			do: func(p Printer) error {
				return p.Flip(Flip{Time: at, PID: 5, TID: 5, Mode: "exact", Field: "c->read->eof", New: 1, Conn: 2, Role: "upstream", LoggedAs: 1,
					Function: "ngx_unix_recv", File: "src/os/unix/ngx_recv.c", Line: 76, Site: "mov"})
			},
			want: `{"time":"2026-11-30T11:02:03.123456Z","pid":5,"tid":5,"flip":{"mode":"exact","field":"c->read->eof","old":0,"new":1,"conn":2,` +
				`"role":"upstream","logged_as":1,"function":"ngx_unix_recv","file":"src/os/unix/ngx_recv.c","line":76,"site":"mov"}}`,
		},
		{
			name: "aggregates",
			do: func(p Printer) error {
				return p.Aggregates([]Aggregate{{Name: "m", Func: "max", KeyNames: []string{"probe", "c->addr_text"}, Rows: []AggregateRow{
					{Keys: []Key{{Readable: true, Text: "f", Data: "f"}, {Readable: true, Text: `"1.2.3.4"`, Data: "1.2.3.4"}}, Count: 2, Sum: 9, Min: 4, Max: 5},
					{Keys: []Key{{Readable: true, Text: "g", Data: "g"}, {}}, Count: 1, Sum: 1, Min: 1, Max: 1},
				}}})
			},
			want: `{"aggregate":{"name":"m","func":"max","keys":["probe","c->addr_text"],"rows":[` +
				`{"keys":["g",null],"value":1,"count":1,"sum":1,"min":1,"max":1},` +
				`{"keys":["f","1.2.3.4"],"value":5,"count":2,"sum":9,"min":4,"max":5}]}}`,
		},
		{
			name: "summary",
			do: func(p Printer) error {
				return p.Summary(Summary{Probes: []ProbeCount{{Probe: "a", Function: "a.part.0", Hits: 3, Events: 2, Lost: 1}}})
			},
			want: `{"summary":{"hits":3,"events":2,"lost":1,"probes":[{"probe":"a","function":"a.part.0","hits":3,"events":2,"lost":1}]}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := print(t, "json", tc.do)
			// encoding/json escapes > as \u003e, as ngxprobe always has.
			want := strings.ReplaceAll(tc.want, ">", `\u003e`)
			if out != want+"\n" {
				t.Errorf("JSON output:\n got %s\nwant %s", out, want)
			}
			if !json.Valid([]byte(out)) {
				t.Errorf("not valid JSON: %s", out)
			}
		})
	}
}
