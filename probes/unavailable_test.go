package probes

import (
	"encoding/binary"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// unavailablePlan is r->connection->number at an inlined copy of a
// function whose r GCC did not keep there.
func unavailablePlan() *symbols.Plan {
	return &symbols.Plan{Expr: "r->connection->number", Type: u64, Root: symbols.Root{Unavailable: "parameter r of f inlined into g at 0x1234: optimized out"},
		Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 200, Size: 8}}
}

// A value that cannot be located reads nothing: its slot says
// unavailable, with the reason, and the other values are read as usual.
func TestUnavailableValue(t *testing.T) {
	plans := []*symbols.Plan{unavailablePlan(), testPlans()[0]}
	l := newLayout(plans)
	insns, err := generate(program{emit: true, layout: newLayout(plans[:1]), wakeupBytes: 1}, fakeMaps)
	if err != nil {
		t.Fatal(err)
	}
	if probeReads(insns) != 0 {
		t.Fatalf("an unavailable value reads user memory:\n%v", insns)
	}
	rec := make([]byte, l.size)
	rec[l.slots[0].offset+slotStatus] = statusUnavailable
	rec[l.slots[1].offset+slotStatus] = statusOK
	binary.LittleEndian.PutUint32(rec[l.slots[1].offset+slotLen:], 8)
	rec[l.slots[1].offset+slotHeader] = 7
	vals, err := l.decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if vals[0].Readable || vals[0].Text != "<unavailable>" || vals[0].Why != plans[0].Root.Unavailable {
		t.Errorf("unavailable value decoded as %+v", vals[0])
	}
	if !vals[1].Readable || vals[1].Text != "7" {
		t.Errorf("the value after it decoded as %+v", vals[1])
	}
}

// The verifier accepts an unavailable value wherever a value can be: in
// the event, in a filter (as a comparison that is false), as an
// aggregation's key and value, and as the Lua walk's lua_State.
func TestVerifierAcceptsUnavailable(t *testing.T) {
	s := loadingSession(t, 4)
	u := unavailablePlan()
	aggs := []AggregateUpdate{
		{Aggregation: &Aggregation{Name: "count"}, Keys: []*symbols.Plan{u, testPlans()[0]}},
		{Aggregation: &Aggregation{Name: "sum"}, Value: &Operand{Plan: u}},
	}
	scratch, err := s.createAggregations([]*Probe{{Name: "p", Aggregates: aggs}})
	if err != nil {
		t.Fatal(err)
	}
	m := s.core.fds()
	m.scratch, m.aggregations = scratch.FD(), map[*Aggregation]int{}
	for _, a := range s.aggregations {
		m.aggregations[a] = s.aggMaps[a].FD()
	}
	str := *u
	str.Read = symbols.Read{Kind: symbols.ReadNgxStr, Offset: 120, Cap: symbols.StringCap}
	where := Or{
		L: Compare{Op: "==", L: Operand{Plan: u}, R: Operand{Const: 3}},
		R: Or{L: Not{X: StringEquals{Plan: &str, Literal: "x"}}, R: Compare{Op: "<", L: Operand{Plan: testPlans()[3]}, R: Operand{Plan: u}}},
	}
	luaState := &symbols.Plan{Expr: "L", Type: u64, Root: symbols.Root{Unavailable: "optimized out"}}
	cases := map[string]program{
		"value":     {emit: true, layout: newLayout([]*symbols.Plan{u, testPlans()[0], u}), wakeupBytes: 4096},
		"filter":    {emit: true, layout: newLayout([]*symbols.Plan{u}), where: where, wakeupBytes: 4096},
		"aggregate": {aggregates: aggs},
		"lua":       {emit: true, layout: newLayout(nil).withLua(testLuaLayout(whereFrames)), luaState: luaState, wakeupBytes: 4096},
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			prog, err := load(planned{program: p, function: &symbols.Function{Symbol: name}}, m)
			if err != nil {
				t.Fatal(err)
			}
			prog.Close()
		})
	}
}
