package main

import (
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
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
	out := eventOutput(at, ev, format, nil)
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

// A key that is the builtin probe is shown by the probe's name.
func TestAggregatesOutput(t *testing.T) {
	agg := &script.Aggregation{Aggregation: &probes.Aggregation{Name: "hits", Func: "count"}, KeyNames: []string{"probe", "rc"}, ProbeKey: []bool{true, false}, ProbeNames: []string{"a", "b%return"}}
	rows := map[*probes.Aggregation][]probes.AggregateRow{agg.Aggregation: {
		{Keys: []probes.Value{{Readable: true, Text: "1", JSON: int64(1)}, {Readable: true, Text: "499", JSON: int64(499)}}, Count: 3},
	}}
	got := aggregatesOutput([]*script.Aggregation{agg}, rows)
	if len(got) != 1 || len(got[0].Rows) != 1 {
		t.Fatalf("aggregates: %+v", got)
	}
	keys := got[0].Rows[0].Keys
	if keys[0].Text != "b%return" || keys[0].Data != "b%return" || keys[1].Data != int64(499) || got[0].Rows[0].Count != 3 {
		t.Errorf("row keys %+v, count %d", keys, got[0].Rows[0].Count)
	}
}
