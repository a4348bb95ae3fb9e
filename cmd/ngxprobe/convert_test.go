package main

import (
	"flag"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch/flips"
)

// eventOutput names, groups and shows values as the script's format says,
// and decides a role from the typed pointer, not from its text.
func TestEventOutput(t *testing.T) {
	ev := probes.Event{
		Probe: &probes.Probe{Name: "f%return", Function: &symbols.Function{Name: "f", Symbol: "f.isra.0"}},
		PID:   7, TID: 7,
		Values: []probes.Value{
			{Expr: "c->number", Readable: true, Text: "3", JSON: uint64(3)},
			{Expr: "c->listening", Readable: true, Text: "0x55d0", JSON: symbols.Pointer(0x55d0)},
			{Expr: "u->listening", Readable: true, Text: "0x0", JSON: symbols.Pointer(0)},
			{Expr: "c->data", Readable: true, Text: "0x10", JSON: symbols.Pointer(0x10)},
			{Expr: "extra", Readable: true, Text: "1", JSON: int64(1)},
		},
	}
	format := &script.EventFormat{Values: []script.ValueFormat{
		{Name: "conn", Group: "client", Display: script.Connection},
		{Name: "role", Group: "client", Display: script.Role},
		{Name: "role", Group: "upstream", Display: script.Role},
		{Name: "data", Hidden: true},
	}}
	at := time.Unix(1, 0)
	out := converter{}.event(at, ev, format, nil)
	if out.Probe != "f%return" || out.Function != "f.isra.0" || !out.Clone || !out.Time.Equal(at) {
		t.Errorf("header: %+v", out)
	}
	want := []output.Value{
		{Name: "conn", Expr: "c->number", Group: "client", Display: output.Connection, Readable: true, Text: "3", Data: uint64(3)},
		{Name: "role", Expr: "c->listening", Group: "client", Display: output.Role, Readable: true, Text: "client", Data: "client"},
		{Name: "role", Expr: "u->listening", Group: "upstream", Display: output.Role, Readable: true, Text: "upstream", Data: "upstream"},
		{Name: "data", Expr: "c->data", Hidden: true, Readable: true, Text: "0x10", Data: output.Pointer(0x10)},
		// A value the format does not describe is named by its expression.
		{Name: "extra", Expr: "extra", Readable: true, Text: "1", Data: int64(1)},
	}
	if len(out.Values) != len(want) {
		t.Fatalf("%d values, want %d", len(out.Values), len(want))
	}
	for i := range want {
		if out.Values[i] != want[i] {
			t.Errorf("value %d:\n got %+v\nwant %+v", i, out.Values[i], want[i])
		}
	}
}

// A converter that reuses its Values slice leaves nothing of one event in
// the next: a later probe's plain value is not shown as the earlier
// one's *N, role, group or hidden value.
func TestEventOutputReused(t *testing.T) {
	p := &probes.Probe{Name: "f", Function: &symbols.Function{Name: "f", Symbol: "f"}}
	cv := converter{}.reusing()
	first := probes.Event{Probe: p, Values: []probes.Value{
		{Expr: "c->number", Readable: true, Text: "3", JSON: uint64(3)},
		{Expr: "c->listening", Readable: true, Text: "0x55d0", JSON: symbols.Pointer(0x55d0)},
	}}
	cv.event(time.Unix(1, 0), first, &script.EventFormat{Values: []script.ValueFormat{
		{Name: "conn", Group: "client", Display: script.Connection},
		{Name: "role", Group: "client", Display: script.Role, Hidden: true},
	}}, nil)
	second := probes.Event{Probe: p, Values: []probes.Value{
		{Expr: "rc", Readable: true, Text: "0", JSON: int64(0)},
		{Expr: "status", Readable: true, Text: "200", JSON: int64(200)},
	}}
	out := cv.event(time.Unix(2, 0), second, nil, nil)
	want := []output.Value{
		{Name: "rc", Expr: "rc", Readable: true, Text: "0", Data: int64(0)},
		{Name: "status", Expr: "status", Readable: true, Text: "200", Data: int64(200)},
	}
	for i := range want {
		if out.Values[i] != want[i] {
			t.Errorf("value %d after another event:\n got %+v\nwant %+v", i, out.Values[i], want[i])
		}
	}
}

// A key that is the builtin probe is shown by the probe's name.
func TestAggregatesOutput(t *testing.T) {
	agg := &script.Aggregation{Aggregation: &probes.Aggregation{Name: "hits", Func: "count"}, KeyNames: []string{"probe", "rc"}, ProbeKey: []bool{true, false}, ProbeNames: []string{"a", "b%return"}}
	rows := map[*probes.Aggregation][]probes.AggregateRow{agg.Aggregation: {
		{Keys: []probes.Value{{Readable: true, Text: "1", JSON: int64(1)}, {Readable: true, Text: "499", JSON: int64(499)}}, Count: 3},
	}}
	got := converter{}.aggregates([]*script.Aggregation{agg}, rows)
	if len(got) != 1 || len(got[0].Rows) != 1 {
		t.Fatalf("aggregates: %+v", got)
	}
	keys := got[0].Rows[0].Keys
	if keys[0].Text != "b%return" || keys[0].Data != "b%return" || keys[1].Data != int64(499) || got[0].Rows[0].Count != 3 {
		t.Errorf("row keys %+v, count %d", keys, got[0].Rows[0].Count)
	}
}

// redacting is the converter of run --redact with the given fields.
func redacting(t *testing.T, fields ...string) converter {
	t.Helper()
	var f traceFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f.register(fs)
	args := []string{"--redact"}
	for _, re := range fields {
		args = append(args, "--redact-field", re)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.converter()
}

// With --redact, strings lose their secrets, values matching a field
// pattern are masked whole whatever their type, and a masked value keeps
// its name and readability; without it, nothing changes.
func TestEventOutputRedacted(t *testing.T) {
	ev := probes.Event{
		Probe: &probes.Probe{Name: "f", Function: &symbols.Function{Name: "f", Symbol: "f"}},
		Values: []probes.Value{
			{Expr: "r->request_line", Readable: true, Text: `"GET /a?token=abc&x=1 HTTP/1.1"`, JSON: "GET /a?token=abc&x=1 HTTP/1.1"},
			{Expr: "r->headers_in.authorization->value", Readable: true, Text: `"Bearer xyz"...`, JSON: "Bearer xyz"},
			{Expr: "r->secret_number", Readable: true, Text: "42", JSON: int64(42)},
			{Expr: "c->listening", Readable: true, Text: "0x55d0", JSON: symbols.Pointer(0x55d0)},
			{Expr: "c->number", Readable: true, Text: "3", JSON: uint64(3)},
			{Expr: "r->args", Why: "pointer load 1 of 1 faulted (NULL or unmapped)", Text: "<unreadable>"},
		},
	}
	format := &script.EventFormat{Values: []script.ValueFormat{
		{Name: "line"}, {Name: "auth"}, {Name: "n"}, {Name: "password_role", Display: script.Role}, {Name: "conn", Display: script.Connection}, {Name: "args"},
	}}
	want := []output.Value{
		{Name: "line", Expr: "r->request_line", Readable: true, Text: `"GET /a?token=***&x=*** HTTP/1.1"`, Data: "GET /a?token=***&x=*** HTTP/1.1"},
		{Name: "auth", Expr: "r->headers_in.authorization->value", Readable: true, Text: `"***"...`, Data: "***"},
		{Name: "n", Expr: "r->secret_number", Readable: true, Text: "***", Data: "***"},
		{Name: "password_role", Expr: "c->listening", Readable: true, Text: "***", Data: "***"},
		{Name: "conn", Expr: "c->number", Display: output.Connection, Readable: true, Text: "3", Data: uint64(3)},
		{Name: "args", Expr: "r->args", Why: "pointer load 1 of 1 faulted (NULL or unmapped)", Text: "<unreadable>"},
	}
	out := redacting(t, "secret", "password").event(time.Unix(1, 0), ev, format, nil)
	for i := range want {
		if out.Values[i] != want[i] {
			t.Errorf("value %d:\n got %+v\nwant %+v", i, out.Values[i], want[i])
		}
	}
	plain := converter{}.event(time.Unix(1, 0), ev, format, nil)
	if plain.Values[0].Data != ev.Values[0].JSON || plain.Values[2].Data != int64(42) || plain.Values[3].Text != "client" {
		t.Errorf("without --redact: %+v", plain.Values)
	}
}

// Aggregation keys are masked as values are, named by their text; a
// probe key is not. A flip's client is masked by a pattern.
func TestAggregatesAndFlipRedacted(t *testing.T) {
	agg := &script.Aggregation{Aggregation: &probes.Aggregation{Name: "by", Func: "count"}, KeyNames: []string{"probe", "r->request_line", "tok"}, ProbeKey: []bool{true, false, false}, ProbeNames: []string{"token"}}
	rows := map[*probes.Aggregation][]probes.AggregateRow{agg.Aggregation: {
		{Keys: []probes.Value{
			{Readable: true, Text: "0", JSON: int64(0)},
			{Expr: "r->request_line", Readable: true, Text: `"GET /?token=secret HTTP/1.1"`, JSON: "GET /?token=secret HTTP/1.1"},
			{Expr: "r->count", Readable: true, Text: "7", JSON: int64(7)},
		}, Count: 1},
	}}
	keys := redacting(t, "^tok$").aggregates([]*script.Aggregation{agg}, rows)[0].Rows[0].Keys
	want := []output.Key{
		{Readable: true, Text: "token", Data: "token"},
		{Readable: true, Text: `"GET /?token=*** HTTP/1.1"`, Data: "GET /?token=*** HTTP/1.1"},
		{Readable: true, Text: "***", Data: "***"},
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Errorf("key %d: got %+v, want %+v", i, keys[i], want[i])
		}
	}
	f := flips.Flip{Mode: "exact", Client: "203.0.113.7", Function: "ngx_unix_recv"}
	if got := redacting(t, "client").flip(time.Unix(1, 0), probes.Event{}, f, nil); got.Client != output.Mask {
		t.Errorf("flip client %q, want it masked", got.Client)
	}
	if got := redacting(t).flip(time.Unix(1, 0), probes.Event{}, f, nil); got.Client != f.Client {
		t.Errorf("flip client %q, want it as read", got.Client)
	}
}

// --redact and --no-redact are a pair: neither given, the default holds
// (off for run and watch); --redact-field implies --redact.
func TestRedactFlags(t *testing.T) {
	for _, c := range []struct {
		args      []string
		byDefault bool
		on        bool
		err       string
	}{
		{args: nil, on: false},
		{args: nil, byDefault: true, on: true},
		{args: []string{"--redact"}, on: true},
		{args: []string{"--redact=false"}, byDefault: true, on: false},
		{args: []string{"--no-redact"}, byDefault: true, on: false},
		{args: []string{"--redact-field", "x"}, on: true},
		{args: []string{"--redact", "--redact"}, on: true},
		{args: []string{"--redact", "--no-redact"}, err: "not both"},
		{args: []string{"--no-redact", "--redact-field", "x"}, err: "--no-redact asks for none"},
		{args: []string{"--redact-field", "x", "--no-redact"}, err: "--no-redact asks for none"},
		{args: []string{"--redact-field", "("}, err: "missing closing )"},
	} {
		var f traceFlags
		f.redact.byDefault = c.byDefault
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.register(fs)
		err := fs.Parse(c.args)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.args, err, c.err)
			}
		case err != nil:
			t.Errorf("%q: %v", c.args, err)
		case (f.converter().redact != nil) != c.on:
			t.Errorf("%q (default %v): redaction %v, want %v", c.args, c.byDefault, !c.on, c.on)
		}
	}
}

// printf lines are formatted from masked values with their strings
// escaped: %s of a request line shows neither the token nor a raw ESC,
// and a newline read from nginx does not start a line.
func TestMessagesRedactedAndEscaped(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	main, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := symbols.NewImage(main)
	defer img.Close()
	parsed, err := script.ParseText("-e", `ngx_http_finalize_request {
    printf("line %s auth %s rc %d\n", r->request_line, r->headers_in.authorization->value, rc)
    printf("Cookie: %s\n", r->headers_in.host->value)
}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := script.Compile(img, parsed)
	if err != nil {
		t.Fatal(err)
	}
	p := prog.Probes[0]
	ev := probes.Event{Probe: p}
	for _, plan := range p.Values {
		v := probes.Value{Expr: plan.Expr, Readable: true}
		switch {
		case strings.Contains(plan.Expr, "request_line"):
			v.JSON = "GET /a?token=secret HTTP/1.1\x1b]0;title\x07\nFORGED"
		case strings.Contains(plan.Expr, "authorization"):
			v.JSON = "Bearer secret"
		case strings.Contains(plan.Expr, "host"):
			v.JSON = "h"
		default:
			v.JSON = int64(499)
		}
		if s, ok := v.JSON.(string); ok {
			v.Text = strconv.Quote(s)
		} else {
			v.Text = "499"
		}
		ev.Values = append(ev.Values, v)
	}
	got := redacting(t).event(time.Unix(1, 0), ev, prog.Format(p), nil).Messages
	want := []string{`line GET /a?token=*** HTTP/1.1\x1b]0;title\a\nFORGED auth *** rc 499` + "\n", "Cookie: ***\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("messages:\n got %q\nwant %q", got, want)
	}
	plain := converter{}.event(time.Unix(1, 0), ev, prog.Format(p), nil).Messages
	if len(plain) != 2 || !strings.Contains(plain[0], `token=secret HTTP/1.1\x1b]0;title\a\nFORGED auth Bearer secret`) {
		t.Errorf("messages without --redact: %q", plain)
	}
}

// --all-nginx masks secrets unless --no-redact says otherwise: a fleet's
// events are read by people who did not ask for them.
func TestRedactByDefaultForFleets(t *testing.T) {
	for _, c := range []struct {
		args []string
		on   bool
	}{
		{[]string{"-p", "1"}, false},
		{[]string{"--all-nginx"}, true},
		{[]string{"--all-nginx", "--no-redact"}, false},
	} {
		var f traceFlags
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.register(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if err := f.check(); err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if (f.converter().redact != nil) != c.on {
			t.Errorf("%q: redaction %v, want %v", c.args, !c.on, c.on)
		}
	}
}
