package probes

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

var u64 = &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "unsigned long"}}}
var u32 = &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 4, Name: "unsigned int"}}}

// testPlans covers every read kind, shared prefixes, constants, saved
// and return roots.
func testPlans() []*symbols.Plan {
	return []*symbols.Plan{
		{Expr: "c->number", Type: u64, Root: symbols.Root{Reg: symbols.RegRDI}, Loads: nil, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 200, Size: 8}},
		{Expr: "c->read->eof", Type: u32, Root: symbols.Root{Reg: symbols.RegRDI}, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 9, Size: 1, BitOffset: 0, BitSize: 1}},
		{Expr: "c->read->error", Type: u32, Root: symbols.Root{Reg: symbols.RegRDI}, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 9, Size: 1, BitOffset: 1, BitSize: 1}},
		{Expr: "size", Type: u64, Root: symbols.Root{Reg: symbols.RegRDX}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}},
		{Expr: "c->addr_text", Type: u64, Root: symbols.Root{Reg: symbols.RegRDI}, Read: symbols.Read{Kind: symbols.ReadNgxStr, Offset: 120, Cap: symbols.StringCap}},
		{Expr: "name", Type: u64, Root: symbols.Root{Reg: symbols.RegRSI}, Read: symbols.Read{Kind: symbols.ReadCString, Cap: symbols.StringCap}},
		{Expr: "7", Type: u64, Root: symbols.Root{Const: true, Add: 7}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}},
		{Expr: "stack arg", Type: u64, Root: symbols.Root{Reg: symbols.RegRSP}, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Size: 8}},
	}
}

func returnPlans() []*symbols.Plan {
	return append(testPlans(), &symbols.Plan{Expr: "$retval", Type: u64, Root: symbols.Root{Reg: symbols.RegRAX, Return: true}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}})
}

var fakeMaps = mapFDs{events: 3, hits: 4, lost: 5, saved: 6}

func TestGenerateAssembles(t *testing.T) {
	plans := returnPlans()
	var roots []rootKey
	for _, p := range plans {
		if !p.Root.Const && !p.Root.Return {
			if k := (rootKey{p.Root.Reg, p.Root.Add}); indexOf(roots, k) < 0 {
				roots = append(roots, k)
			}
		}
	}
	cases := map[string]program{
		"entry":          {emit: true, layout: newLayout(testPlans()), wakeupBytes: 4096},
		"entry+save":     {emit: true, layout: newLayout(testPlans()), saveRoots: roots, functionID: 1, wakeupBytes: 4096},
		"save only":      {saveRoots: roots, functionID: 1},
		"return":         {emit: true, isReturn: true, layout: newLayout(plans), savedRoots: roots, functionID: 1, wakeupBytes: 4096},
		"filter":         {emit: true, layout: newLayout(testPlans()[:1]), filter: processFilter{tgid: 42}},
		"stack":          {emit: true, layout: newLayout(testPlans()).withStack(DefaultStackBytes), wakeupBytes: 4096},
		"filter+parents": {emit: true, layout: newLayout(testPlans()[:1]), filter: processFilter{tgid: 42, includeChildren: true, realParentOff: 100, tgidOff: 200}},
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			insns, err := generate(p, fakeMaps)
			if err != nil {
				t.Fatal(err)
			}
			for i, in := range insns {
				if in.OpCode == asm.InvalidOpCode {
					t.Fatalf("instruction %d is invalid: %v", i, in)
				}
			}
			// Marshal resolves every jump label: a dangling one fails here.
			if err := insns.Marshal(&bytes.Buffer{}, binary.LittleEndian); err != nil {
				t.Fatalf("marshal: %v\n%v", err, insns)
			}
		})
	}
}

// probeReads counts a program's bpf_probe_read_user calls.
func probeReads(insns asm.Instructions) int {
	n := 0
	for _, in := range insns {
		if in.IsBuiltinCall() && asm.BuiltinFunc(in.Constant) == asm.FnProbeReadUser {
			n++
		}
	}
	return n
}

// A shared prefix (c->read) is loaded once: count the probe reads.
func TestSharedPrefixReadOnce(t *testing.T) {
	plans := testPlans()[1:3] // c->read->eof, c->read->error
	insns, err := generate(program{emit: true, layout: newLayout(plans), wakeupBytes: 1}, fakeMaps)
	if err != nil {
		t.Fatal(err)
	}
	reads := probeReads(insns)
	// One pointer load for c->read, then one final read per value.
	if reads != 3 {
		t.Fatalf("probe_read_user calls = %d, want 3 (1 shared load + 2 final reads)\n%v", reads, insns)
	}
}

func TestReturnNeedsSavedRoot(t *testing.T) {
	_, err := generate(program{emit: true, isReturn: true, layout: newLayout(testPlans()[:1])}, fakeMaps)
	if err == nil || !strings.Contains(err.Error(), "not saved at entry") {
		t.Fatalf("err = %v, want a missing saved root", err)
	}
}

func TestDecode(t *testing.T) {
	plans := []*symbols.Plan{
		testPlans()[1], // eof bitfield
		testPlans()[4], // ngx_str_t
		testPlans()[0], // number, unreadable below
	}
	l := newLayout(plans)
	rec := make([]byte, l.size)
	put := func(slot valueSlot, status byte, data []byte) {
		rec[slot.offset+slotStatus] = status
		binary.LittleEndian.PutUint32(rec[slot.offset+slotLen:], uint32(len(data)))
		copy(rec[slot.offset+slotHeader:], data)
	}
	put(l.slots[0], statusOK, []byte{0x05}) // bits 0 and 2 set: eof=1
	str := make([]byte, 16+9)
	binary.LittleEndian.PutUint64(str, 9) // len
	copy(str[16:], "127.0.0.1")
	put(l.slots[1], statusOK, str)
	put(l.slots[2], statusFault, nil)
	vals, err := l.decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !vals[0].Readable || vals[0].Text != "1" {
		t.Errorf("eof = %+v, want readable 1", vals[0])
	}
	if vals[1].Text != `"127.0.0.1"` || vals[1].JSON != "127.0.0.1" {
		t.Errorf("addr_text = %+v", vals[1])
	}
	if vals[2].Readable || !strings.Contains(vals[2].Why, "faulted") {
		t.Errorf("number = %+v, want unreadable with a reason", vals[2])
	}
	if _, err := l.decode(rec[:10]); err == nil {
		t.Error("a short record decoded without error")
	}
}

// Every user-memory read is preceded by a NULL check, so a NULL pointer
// (r->upstream before there is one) costs a compare, not a page fault.
func TestReadsGuardNull(t *testing.T) {
	insns, err := generate(program{emit: true, layout: newLayout(testPlans()), wakeupBytes: 1}, fakeMaps)
	if err != nil {
		t.Fatal(err)
	}
	reads, guards := 0, 0
	for _, in := range insns {
		switch {
		case in.IsBuiltinCall() && (asm.BuiltinFunc(in.Constant) == asm.FnProbeReadUser || asm.BuiltinFunc(in.Constant) == asm.FnProbeReadUserStr):
			reads++
		case in.OpCode.JumpOp() == asm.JLT && in.Constant == nullPage:
			guards++
		}
	}
	if reads == 0 || guards < reads {
		t.Fatalf("%d user reads but %d NULL guards\n%v", reads, guards, insns)
	}
}

func TestReadAfterClose(t *testing.T) {
	s := &Session{}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrClosed", err)
	}
}

// Every program gets a distinct counter slot within the maps' 2×probes
// entries, including the argument-saving program of a return-only probe.
func TestPlanCounterSlots(t *testing.T) {
	f := &symbols.Function{Symbol: "f", Address: 0x1000}
	g := &symbols.Function{Symbol: "g", Address: 0x2000}
	saved := &symbols.Plan{Expr: "size", Type: u64, Root: symbols.Root{Reg: symbols.RegRDX}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}}
	ps := []*Probe{{Function: f, Return: true, Values: []*symbols.Plan{saved}}, {Function: g, Return: true, Values: []*symbols.Plan{saved}}}
	progs := plan(ps, processFilter{}, 1, 0, nil)
	if len(progs) != 4 {
		t.Fatalf("%d programs, want 2 returns + 2 argument-saving entries", len(progs))
	}
	seen := map[uint32]bool{}
	for _, p := range progs {
		if p.probeID >= uint32(2*len(ps)) || seen[p.probeID] {
			t.Fatalf("probe id %d: out of the %d counter slots or reused (%v)", p.probeID, 2*len(ps), seen)
		}
		seen[p.probeID] = true
		if !p.isReturn && len(p.saveRoots) != 1 {
			t.Errorf("entry of %s saves %v, want size's register", p.function.Symbol, p.saveRoots)
		}
	}
}

// Only a probe at the function's entry saves arguments for its return
// probe (their key has sp at entry): with a probe inside the body, a
// saving program of its own goes to the entry.
func TestSaverAtEntryOnly(t *testing.T) {
	f := &symbols.Function{Symbol: "f", Address: 0x1000}
	saved := &symbols.Plan{Expr: "size", Type: u64, Root: symbols.Root{Reg: symbols.RegRDX}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}}
	ps := []*Probe{{Function: f, At: 0x10, Values: []*symbols.Plan{saved}}, {Function: f, Return: true, Values: []*symbols.Plan{saved}}}
	progs := plan(ps, processFilter{}, 1, 0, nil)
	savers := 0
	for _, p := range progs {
		if len(p.saveRoots) > 0 {
			savers++
			if p.at != 0 {
				t.Errorf("arguments saved at f+%#x, want the entry", p.at)
			}
		}
	}
	if len(progs) != 3 || savers != 1 {
		t.Fatalf("%d programs, %d saving: want the body probe, the return and one saving entry", len(progs), savers)
	}
}

// A filter reads what its comparisons share once: the bits of one byte
// (eof, error, timedout of an event) in one read, and fields of one
// struct near each other (a connection's read and write events and its
// own flags, 216 bytes apart) in one copy.
func TestFilterReadsGrouped(t *testing.T) {
	rdi := symbols.Root{Reg: symbols.RegRDI}
	bit := func(expr string, loads []int64, off int64, b int) *symbols.Plan {
		return &symbols.Plan{Expr: expr, Type: u32, Root: rdi, Loads: loads, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: off, Size: 1, BitOffset: b, BitSize: 1}}
	}
	set := func(p *symbols.Plan) Cond { return Compare{Op: "!=", L: Operand{Plan: p}, R: Operand{Const: 0}} }
	where := Or{L: set(bit("c->read->eof", []int64{8}, 9, 0)), R: Or{
		L: set(bit("c->read->error", []int64{8}, 9, 1)), R: Or{
			L: set(bit("c->read->timedout", []int64{8}, 9, 2)), R: Or{
				L: set(bit("c->write->timedout", []int64{16}, 9, 2)), R: Or{
					L: set(bit("c->timedout", nil, 225, 3)), R: set(bit("c->error", nil, 225, 4))}}}}}
	insns, err := generate(program{where: where}, fakeMaps)
	if err != nil {
		t.Fatal(err)
	}
	reads := probeReads(insns)
	// One copy of c from its read event to its flags, then c->read's and
	// c->write's flag bytes: 3 reads for 6 comparisons (9 without grouping).
	if reads != 3 {
		t.Fatalf("probe_read_user calls = %d, want 3\n%v", reads, insns)
	}
	// Past the window, two groups.
	far := Or{L: where, R: set(bit("c->far", nil, 8+spanWindow, 0))}
	if insns, err = generate(program{where: far}, fakeMaps); err != nil {
		t.Fatal(err)
	}
	reads = probeReads(insns)
	if reads != 4 {
		t.Fatalf("probe_read_user calls = %d with a field past the window, want 4\n%v", reads, insns)
	}
	// 12 groups of two values: 8 read at the start (maxValueGroups), the
	// other 4 groups' 8 values where they are compared.
	if insns, err = generate(program{where: manyGroups()}, fakeMaps); err != nil {
		t.Fatal(err)
	}
	reads = probeReads(insns)
	if reads != maxValueGroups+8 {
		t.Fatalf("probe_read_user calls = %d for 12 groups of two, want %d", reads, maxValueGroups+8)
	}
}
