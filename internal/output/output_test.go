package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/probeset"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

func testEvent() (probes.Event, *probeset.Spec) {
	spec := &probeset.Spec{Function: "f", Values: []probeset.Value{
		{Name: "conn", Expr: "c->number", Group: "client", Display: probeset.Connection},
		{Name: "role", Expr: "c->listening", Group: "client", Display: probeset.Role},
		{Name: "eof", Expr: "c->read->eof", Group: "client read"},
		{Name: "conn", Expr: "u->number", Group: "upstream"},
		{Name: "eof", Expr: "u->read->eof", Group: "upstream read"},
	}}
	ev := probes.Event{
		Probe: &probes.Probe{Name: "f", Function: &symbols.Function{Name: "f", Symbol: "f.lto_priv.0"}},
		PID:   7, TID: 8,
		Values: []probes.Value{
			{Expr: "c->number", Readable: true, Text: "3", JSON: uint64(3)},
			{Expr: "c->listening", Readable: true, Text: "0x55d0", JSON: "0x55d0"},
			{Expr: "c->read->eof", Readable: true, Text: "1", JSON: uint64(1)},
			{Expr: "u->number", Why: "pointer load 1 of 1 faulted (NULL or unmapped)"},
			{Expr: "u->read->eof", Why: "pointer load 1 of 2 faulted (NULL or unmapped)"},
		},
	}
	return ev, spec
}

// The JSON keys are documented in the README as stable.
func TestJSONKeys(t *testing.T) {
	ev, spec := testEvent()
	var buf bytes.Buffer
	p := &Printer{W: &buf, JSON: true}
	st := &stacks.Stack{Frames: []stacks.Frame{{Module: "nginx", Address: 0x4a6b0, Symbol: "ngx_unix_recv"}}}
	if err := p.Print(ev, spec, st); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, buf.String())
	}
	for _, k := range []string{"time", "pid", "tid", "probe", "function", "values", "stack"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing key %q in %s", k, buf.String())
		}
	}
	vals := got["values"].([]any)
	first := vals[0].(map[string]any)
	for _, k := range []string{"name", "expr", "value", "readable"} {
		if _, ok := first[k]; !ok {
			t.Errorf("value without key %q: %v", k, first)
		}
	}
	if role := vals[1].(map[string]any)["role"]; role != "client" {
		t.Errorf("role = %v, want client", role)
	}
	if v := vals[3].(map[string]any); v["readable"] != false || v["value"] != nil || !strings.Contains(v["why"].(string), "faulted") {
		t.Errorf("unreadable value = %v", v)
	}
	frames := got["stack"].(map[string]any)["frames"].([]any)
	for _, k := range []string{"module", "address", "symbol", "offset"} {
		if _, ok := frames[0].(map[string]any)[k]; !ok {
			t.Errorf("frame without key %q", k)
		}
	}
}

// An unreadable group (no upstream yet) prints as "-", and its
// sub-groups not at all.
func TestTextGroups(t *testing.T) {
	ev, spec := testEvent()
	var buf bytes.Buffer
	if err := (&Printer{W: &buf}).Print(ev, spec, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"f pid 7 tid 8 (f.lto_priv.0)", "client:", "conn=*3 role=client", "client read:", "eof=1", "upstream:", " -\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "upstream read") {
		t.Errorf("an unreadable sub-group was printed:\n%s", out)
	}
}
