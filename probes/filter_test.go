package probes

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// testWhere exercises every condition form: logic, signed and unsigned
// comparisons, bitfields, two values read, and string literals against
// ngx_str_t, char * and a char array.
func testWhere() Cond {
	p := testPlans()
	charArray := &symbols.Plan{Expr: "arr", Type: u64, Root: symbols.Root{Reg: symbols.RegRDI}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 16, Size: 8}}
	return Or{
		L: And{
			L: Compare{Op: "==", L: Operand{Plan: p[0]}, R: Operand{Const: 42}},
			R: Not{X: Compare{Op: "!=", L: Operand{Plan: p[1]}, R: Operand{Const: 0}}},
		},
		R: Or{
			L: And{
				L: Compare{Op: "<", L: Operand{Plan: p[3], Signed: true}, R: Operand{Const: -1 << 40, Signed: true}},
				R: Compare{Op: ">=", L: Operand{Plan: p[0]}, R: Operand{Plan: p[3]}},
			},
			R: Or{
				L: StringEquals{Plan: p[4], Literal: "127.0.0.1"},
				R: Or{L: StringEquals{Plan: p[5], Literal: "GET\xff"}, R: StringEquals{Plan: charArray, Literal: "ab"}},
			},
		},
	}
}

func testAggregates() []AggregateUpdate {
	p := testPlans()
	return []AggregateUpdate{
		{Aggregation: &Aggregation{Name: "count"}, Keys: []*symbols.Plan{p[0], p[1], p[4]}},
		{Aggregation: &Aggregation{Name: "sum"}, Keys: nil, Value: &Operand{Plan: p[3], Signed: true}},
	}
}

func TestGenerateFiltersAndAggregates(t *testing.T) {
	m := fakeMaps
	aggs := testAggregates()
	m.aggregations = map[*Aggregation]int{aggs[0].Aggregation: 8, aggs[1].Aggregation: 9}
	m.scratch = 7
	for _, a := range aggs {
		a.Aggregation.keys = keyLayout(a.Keys)
	}
	insns, err := generate(program{emit: true, layout: newLayout(testPlans()[:2]), where: testWhere(), aggregates: aggs}, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := insns.Marshal(&bytes.Buffer{}, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
}

// The verifier accepts filters and aggregations, at entry and at return
// (where arguments come from the saved entry values).
// manyGroups is a filter over flags of 12 objects, each two bytes of one
// group: past maxValueGroups, the rest are read where they are compared.
func manyGroups() Cond {
	var c Cond = Compare{Op: "==", L: Operand{Const: 1}, R: Operand{Const: 2}}
	for i := range 12 {
		for _, off := range []int64{9, 17} {
			p := &symbols.Plan{Expr: fmt.Sprintf("o%d[%d]", i, off), Type: u32, Root: symbols.Root{Reg: symbols.RegRDI, Add: int64(4096 * i)},
				Read: symbols.Read{Kind: symbols.ReadMemory, Offset: off, Size: 1, BitOffset: 1, BitSize: 1}}
			c = Or{L: c, R: Compare{Op: "!=", L: Operand{Plan: p}, R: Operand{Const: 0}}}
		}
	}
	return c
}

func TestVerifierAcceptsFiltersAndAggregates(t *testing.T) {
	s := loadingSession(t, 4)
	aggs := testAggregates()
	pr := &Probe{Name: "p", Aggregates: aggs}
	scratch, err := s.createAggregations([]*Probe{pr})
	if err != nil {
		t.Fatal(err)
	}
	m := s.core.fds()
	m.scratch, m.aggregations = scratch.FD(), map[*Aggregation]int{}
	for _, a := range s.aggregations {
		m.aggregations[a] = s.aggMaps[a].FD()
	}
	roots := []rootKey{{symbols.RegRDI, 0}, {symbols.RegRDX, 0}, {symbols.RegRSI, 0}}
	cases := map[string]program{
		"filter":           {emit: true, layout: newLayout(testPlans()[:2]), where: testWhere(), wakeupBytes: 4096},
		"aggregate only":   {aggregates: aggs},
		"filter+aggregate": {emit: true, layout: newLayout(testPlans()[:2]), where: testWhere(), aggregates: aggs, wakeupBytes: 4096},
		"return filter":    {emit: true, isReturn: true, layout: newLayout(testPlans()[:2]), savedRoots: roots, functionID: 1, where: testWhere(), aggregates: aggs, wakeupBytes: 4096},
		// The filter reads $retval only: the saved roots are looked up
		// after it, for the values and aggregations of a kept hit.
		"return filter, late lookup": {emit: true, isReturn: true, layout: newLayout(testPlans()[:2]), savedRoots: roots, functionID: 1, wakeupBytes: 4096, aggregates: aggs,
			where: Compare{Op: "==", L: Operand{Plan: &symbols.Plan{Expr: "$retval", Type: u64, Root: symbols.Root{Reg: symbols.RegRAX, Return: true}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}}}, R: Operand{Const: 0}}},
		// More value groups than are hoisted, each group several reads.
		"many grouped reads": {emit: true, layout: newLayout(testPlans()[:2]), where: manyGroups(), wakeupBytes: 4096},
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
