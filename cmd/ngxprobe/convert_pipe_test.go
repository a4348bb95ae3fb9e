package main

import (
	"math/rand/v2"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// refEvent is converter.event as it was before it skipped the work an
// event does not need: the tests below compare both.
func refEvent(cv converter, at time.Time, ev probes.Event, format *script.EventFormat, st *output.Stack) output.Event {
	out := output.Event{
		Time:     at,
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe.Name,
		Function: ev.Probe.Function.Symbol,
		Clone:    ev.Probe.Function.IsClone(),
		Values:   make([]output.Value, len(ev.Values)),
		Stack:    st,
	}
	shown := make([]probes.Value, len(ev.Values))
	for i, v := range ev.Values {
		vf := script.ValueFormat{Name: v.Expr}
		if format != nil && i < len(format.Values) {
			vf = format.Values[i]
		}
		red, masked := cv.value(vf.Name, v)
		ov := output.Value{Name: vf.Name, Expr: v.Expr, Group: vf.Group, Hidden: vf.Hidden, Readable: v.Readable, Why: v.Why, Text: red.Text, Data: data(red.JSON)}
		switch {
		case masked && red.JSON == output.Mask:
		case vf.Display == script.Role:
			ov.Display = output.Role
			ov.Text = role(v)
			ov.Data = ov.Text
		case vf.Display == script.Connection:
			ov.Display = output.Connection
		}
		out.Values[i] = ov
		shown[i] = red
		if s, ok := red.JSON.(string); ok {
			shown[i].JSON = output.Escape(s)
		}
		shown[i].Text = output.Escape(red.Text)
	}
	if format != nil {
		for i := range format.Messages {
			out.Messages = append(out.Messages, cv.redact.Text(format.Messages[i].Render(shown)))
		}
	}
	return out
}

// convPieces make the generated strings: secrets for the redactor
// (queries, credential headers, field names), and terminal escapes.
var convPieces = []string{"", "a", "GET /a?token=abc&x=1 HTTP/1.1", "/p?q", "?k=v", "&", "=", "#f", " ", "\t", "\r\n", "\n",
	"Cookie: s=1", "authorization:Bearer x", "Set-Cookie : y", "password", "secret", "\x1b[31m", "\x1b]0;t\x07", "\x9b", "\u2028", "\xff", "é", `"`, "%s", "%d"}

func convString(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(5); n > 0; n-- {
		b.WriteString(convPieces[r.IntN(len(convPieces))])
	}
	return b.String()
}

var convExprs = []string{"rc", "r->request_line", "r->args", "u->args", "r->headers_in.authorization->value", "r->headers_in.cookie", "c->listening", "c->number", "r->secret", "c->addr_text", "c->log->connection"}

// convValue is a decoded value of any kind the decoder makes.
func convValue(r *rand.Rand, expr string) probes.Value {
	v := probes.Value{Expr: expr, Readable: r.IntN(4) > 0, Raw: []byte{1}}
	if !v.Readable {
		v.Why, v.Text, v.Raw = "pointer load 1 of 2 faulted (NULL or unmapped)", "<unreadable>", nil
		return v
	}
	switch r.IntN(6) {
	case 0:
		n := int64(r.Uint64() >> r.IntN(64))
		v.JSON, v.Text = n, strconv.FormatInt(n, 10)
	case 1:
		n := r.Uint64() >> r.IntN(64)
		v.JSON, v.Text = n, strconv.FormatUint(n, 10)
	case 2:
		p := symbols.Pointer(r.Uint64() >> r.IntN(64) * uint64(r.IntN(2)))
		v.JSON, v.Text = p, p.String()
	case 3:
		s := convString(r)
		v.JSON, v.Text = s, strconv.Quote(s)
		if r.IntN(3) == 0 {
			v.Text += "..."
		}
	case 4:
		s := convString(r)
		v.JSON, v.Text = s, s // an address, an enum's name
	default:
		v.JSON, v.Text = nil, "?"
	}
	return v
}

func convEvent(r *rand.Rand, probe *probes.Probe, exprs []string) probes.Event {
	ev := probes.Event{Probe: probe, PID: r.Uint32(), TID: r.Uint32()}
	for _, e := range exprs {
		ev.Values = append(ev.Values, convValue(r, e))
	}
	return ev
}

func convFormat(r *rand.Rand, n int) *script.EventFormat {
	if r.IntN(5) == 0 {
		return nil
	}
	f := &script.EventFormat{}
	for range n - r.IntN(2) { // sometimes a value the format does not describe
		f.Values = append(f.Values, script.ValueFormat{Name: []string{"rc", "conn", "role", "password", "line", convString(r)}[r.IntN(6)], Group: []string{"", "client", "client read"}[r.IntN(3)],
			Display: script.Display(r.IntN(3)), Hidden: r.IntN(5) == 0})
	}
	return f
}

// convConverters are the converters of run, run --redact and run
// --redact-field secret --redact-field ^conn$ --redact-field addr.
func convConverters() map[string]converter {
	fields := []*regexp.Regexp{regexp.MustCompile("secret"), regexp.MustCompile("^conn$"), regexp.MustCompile("addr")}
	return map[string]converter{"plain": {}, "redact": {redact: output.NewRedactor(nil)}, "redact-field": {redact: output.NewRedactor(fields)}}
}

func checkConverted(t *testing.T, name string, cv converter, ev probes.Event, format *script.EventFormat) {
	t.Helper()
	at := time.Unix(int64(ev.PID), 0)
	st := &output.Stack{Reason: "x"}
	got, want := cv.event(at, ev, format, st), refEvent(cv, at, ev, format, st)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: event of %+v, format %+v:\n got %+v\nwant %+v", name, ev.Values, format, got, want)
	}
	for i := range got.Values {
		// Data is compared by dynamic type too: Pointer stays output.Pointer.
		if reflect.TypeOf(got.Values[i].Data) != reflect.TypeOf(want.Values[i].Data) {
			t.Fatalf("%s: value %d data %T, want %T", name, i, got.Values[i].Data, want.Values[i].Data)
		}
	}
}

// converter.event makes, for generated values and formats, with and
// without redaction, the event it made before.
func TestConvertMatchesReference(t *testing.T) {
	probe := &probes.Probe{Name: "f%return", Function: &symbols.Function{Name: "f", Symbol: "f.isra.0"}}
	r := rand.New(rand.NewPCG(18, 7))
	for name, cv := range convConverters() {
		for range 3000 {
			exprs := make([]string, r.IntN(8))
			for i := range exprs {
				exprs[i] = convExprs[r.IntN(len(convExprs))]
			}
			checkConverted(t, name, cv, convEvent(r, probe, exprs), convFormat(r, len(exprs)))
		}
	}
}

// The same with printf lines, compiled from a script against the test
// nginx: they are formatted from the masked, escaped values as before.
func TestConvertMessagesMatchReference(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	main, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := symbols.NewImage(main)
	defer img.Close()
	parsed, err := script.ParseText("-e", `ngx_http_finalize_request {
    print("request", rc, line = r->request_line, role = r->connection->listening, conn = r->connection->number)
    printf("line %s auth %s rc %d %x %p\n", r->request_line, r->headers_in.authorization->value, rc, rc, r->connection->listening)
    printf("Cookie: %s %5d|%-8s|\n", r->headers_in.host->value, r->connection->number, r->args)
}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := script.Compile(img, parsed)
	if err != nil {
		t.Fatal(err)
	}
	p := prog.Probes[0]
	format := prog.Format(p)
	if len(format.Messages) != 2 {
		t.Fatalf("%d messages", len(format.Messages))
	}
	var exprs []string
	for _, plan := range p.Values {
		exprs = append(exprs, plan.Expr)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for name, cv := range convConverters() {
		for range 2000 {
			checkConverted(t, name, cv, convEvent(r, p, exprs), format)
		}
	}
}

// defaultFinalize is an ngx_http_finalize_request event of the default
// probe set as the decoder makes it, and its format: 24 values in 9
// groups, the upstream ones unreadable.
func defaultFinalize() (probes.Event, *script.EventFormat) {
	ev := probes.Event{Probe: &probes.Probe{Name: "ngx_http_finalize_request", Function: &symbols.Function{Name: "ngx_http_finalize_request", Symbol: "ngx_http_finalize_request"}}, PID: 4242, TID: 4242}
	format := &script.EventFormat{}
	add := func(group, name, expr string, display script.Display, readable bool, json any, text string) {
		v := probes.Value{Expr: expr, Readable: readable, Raw: []byte(text), JSON: json, Text: text}
		if !readable {
			v = probes.Value{Expr: expr, Why: "pointer load 2 of 3 faulted (NULL or unmapped)", Text: "<unreadable>"}
		}
		ev.Values = append(ev.Values, v)
		format.Values = append(format.Values, script.ValueFormat{Name: name, Group: group, Display: display})
	}
	add("request", "rc", "rc", script.Plain, true, int64(0), "0")
	add("request", "status", "r->headers_out.status", script.Plain, true, uint64(200), "200")
	add("request", "client", "r->connection->addr_text", script.Plain, true, "127.0.0.1", `"127.0.0.1"`)
	add("request", "request", "r->request_line", script.Plain, true, "GET / HTTP/1.1", `"GET / HTTP/1.1"`)
	add("client", "conn", "r->connection->number", script.Connection, true, uint64(12345), "12345")
	add("client", "role", "r->connection->listening", script.Role, true, symbols.Pointer(0x55d0a3c4e010), "0x55d0a3c4e010")
	for _, side := range []string{"read", "write"} {
		for _, f := range []string{"eof", "timedout", "error"} {
			add("client "+side, f, "r->connection->"+side+"->"+f, script.Plain, true, uint64(0), "0")
		}
	}
	add("client conn", "error", "r->connection->error", script.Plain, true, uint64(0), "0")
	add("client conn", "timedout", "r->connection->timedout", script.Plain, true, uint64(0), "0")
	add("upstream", "conn", "r->upstream->peer.connection->number", script.Connection, false, nil, "")
	add("upstream", "role", "r->upstream->peer.connection->listening", script.Role, false, nil, "")
	for _, side := range []string{"read", "write"} {
		for _, f := range []string{"eof", "timedout", "error"} {
			add("upstream "+side, f, "r->upstream->peer.connection->"+side+"->"+f, script.Plain, false, nil, "")
		}
	}
	add("upstream conn", "error", "r->upstream->peer.connection->error", script.Plain, false, nil, "")
	add("upstream conn", "timedout", "r->upstream->peer.connection->timedout", script.Plain, false, nil, "")
	return ev, format
}

// The converter's cost per default-set event, without and with --redact.
func BenchmarkConvertEvent(b *testing.B) {
	ev, format := defaultFinalize()
	for name, cv := range convConverters() {
		if name == "redact-field" {
			continue
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = cv.event(time.Time{}, ev, format, nil)
			}
		})
		b.Run(name+"/reference", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = refEvent(cv, time.Time{}, ev, format, nil)
			}
		})
	}
}
