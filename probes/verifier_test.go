package probes

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// loadingSession returns a session with its core maps, closed when the
// test ends, for tests that load programs: they need root and a kernel
// that supports tracing.
func loadingSession(t *testing.T, nprobes int) *Session {
	t.Helper()
	testenv.RequireRoot(t)
	if err := CheckSupport(); err != nil {
		testenv.SkipOrFail(t, "kernel support: %v", err)
	}
	s := &Session{}
	t.Cleanup(func() { s.Close() })
	if err := s.createMaps(nprobes, 1<<16); err != nil {
		t.Fatal(err)
	}
	return s
}

// The kernel's verifier is the judge of generated code: every shape of
// program must load.
func TestVerifierAcceptsPrograms(t *testing.T) {
	s := loadingSession(t, 16)
	m := s.core.fds()
	realParent, tgid, err := taskOffsets()
	if err != nil {
		t.Fatal(err)
	}
	roots := []rootKey{{symbols.RegRDI, 0}, {symbols.RegRDX, 0}, {symbols.RegRSI, 0}, {symbols.RegRSP, 0}}
	cases := map[string]program{
		"entry":       {emit: true, layout: newLayout(testPlans()), wakeupBytes: 4096},
		"entry+save":  {emit: true, layout: newLayout(testPlans()), saveRoots: roots, functionID: 1, wakeupBytes: 4096},
		"save only":   {saveRoots: roots, functionID: 1},
		"return":      {emit: true, isReturn: true, layout: newLayout(returnPlans()), savedRoots: roots, functionID: 1, wakeupBytes: 4096},
		"workers":     {emit: true, layout: newLayout(testPlans()), filter: processFilter{tgid: 1, includeChildren: true, realParentOff: realParent, tgidOff: tgid}},
		"empty event": {emit: true, layout: newLayout(nil)},
		"stack":       {emit: true, layout: newLayout(testPlans()).withStack(DefaultStackBytes), wakeupBytes: 4096},
		// The Lua walk, at its largest, before a stack; from the running
		// lua_State, from an argument, and with chunk filters.
		"lua stack":  {emit: true, layout: newLayout(testPlans()).withLua(testLuaLayout(lua.DefaultMaxFrames)).withStack(DefaultStackBytes), wakeupBytes: 4096},
		"lua from L": {emit: true, layout: newLayout(nil).withLua(testLuaLayout(lua.DefaultMaxFrames)), luaState: &symbols.Plan{Expr: "ctx->L", Type: u64, Root: symbols.Root{Reg: symbols.RegRDI}, Loads: []int64{16}}, wakeupBytes: 4096},
		"lua return from L": {emit: true, isReturn: true, layout: newLayout(nil).withLua(testLuaLayout(whereFrames)), luaState: &symbols.Plan{Expr: "L", Type: u64, Root: symbols.Root{Reg: symbols.RegRDX}},
			savedRoots: roots, functionID: 1, wakeupBytes: 4096},
		"lua filters": {emit: true, layout: newLayout(nil).withLua(testLuaLayout(lua.DefaultMaxFrames)), wakeupBytes: 4096,
			luaChunk: []LuaChunkMatch{{Chunk: "auth.lua"}, {Chunk: strings.Repeat("x", MaxLuaChunkMatch), Negate: true}}},
	}
	// The workers check by BTF task loads, where the kernel has them (5.11).
	if err := haveTaskBTF(realParent, tgid); err == nil {
		cases["workers btf"] = program{emit: true, layout: newLayout(testPlans()), filter: processFilter{tgid: 1, includeChildren: true, realParentOff: realParent, tgidOff: tgid, taskBTF: true}}
	} else {
		t.Logf("workers btf: not on this kernel: %v", err)
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

// testLuaLayout has OpenResty's LuaJIT 2.1 GC64 offsets (amd64) and
// made-up nginx addresses: the verifier judges the code, not the values.
func testLuaLayout(frames int) *lua.Layout {
	return &lua.Layout{
		CycleAddr: 0x5600_0000_1000, HTTPModuleAddr: 0x5600_0000_2000, LuaModuleAddr: 0x7f00_0000_3000,
		CycleConfCtx: 8, ModuleCtxIndex: 0, ModuleIndex: 8, ConfCtxMainConf: 8, MainConfLua: 0,
		StateGlref: 16, StateBase: 32, StateStack: 56, StateCframe: 80,
		GlobalCurL: 368, GlobalVMState: 184, GlobalJITBase: 376, GlobalToJIT: 848 - 112, JITTrace: 384,
		TraceStartPt: 64, TraceStartPC: 72, FuncFFID: 10, FuncPC: 32, FuncCF: 40, ProtoSize: 104,
		ProtoSizeBC: 12, ProtoChunkName: 64, ProtoFirstLine: 72, ProtoNumLine: 76, ProtoLineInfo: 80,
		StrLen: 20, StrSize: 24, ProtoLo: 12, ProtoHi: 88, MaxFrames: frames,
	}
}

// A program the verifier rejects is reported with the verifier's log.
// Passing a per-CPU array where a ring buffer belongs is rejected whatever
// the values, so the probe itself, not an expression, is blamed.
func TestVerifierErrorCarriesLog(t *testing.T) {
	testenv.RequireRoot(t)
	s := &Session{}
	defer s.Close()
	if err := s.createMaps(4, 1<<16); err != nil {
		t.Fatal(err)
	}
	m := s.core.fds()
	m.events = s.core.hits.FD()
	_, err := load(planned{program: program{emit: true, layout: newLayout(testPlans()[:2])}, function: &symbols.Function{Symbol: "f"}}, m)
	var ve *VerifierError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a *VerifierError", err)
	}
	if ve.Expr != "" || len(ve.Log) == 0 || !strings.Contains(err.Error(), "the probe itself") {
		t.Fatalf("verifier error blames %q with %d log lines: %v", ve.Expr, len(ve.Log), err)
	}
	var inner *ebpf.VerifierError
	if !errors.As(err, &inner) {
		t.Fatalf("the cilium verifier error is not wrapped: %v", err)
	}
}

func TestEventTooLarge(t *testing.T) {
	huge := &symbols.Plan{Expr: "huge", Type: u64, Root: symbols.Root{Reg: symbols.RegRDI},
		Read: symbols.Read{Kind: symbols.ReadCString, Cap: 40000}}
	_, err := generate(program{emit: true, layout: newLayout([]*symbols.Plan{huge})}, fakeMaps)
	if err == nil || !strings.Contains(err.Error(), "split them across probes") {
		t.Fatalf("err = %v, want the event size limit", err)
	}
}

// The Lua walk is unrolled; its verification must stay linear in its
// frames. Kept on the BPF stack, the walk's state picked up value ranges
// that differed frame by frame: 24 frames took the verifier 200k
// instructions and half a second per program, and a watch with dozens
// of programs took 17 s to attach.
func TestLuaWalkVerifierCost(t *testing.T) {
	s := loadingSession(t, 16)
	m := s.core.fds()
	processed := map[int]int{}
	for _, frames := range []int{4, lua.DefaultMaxFrames} {
		p := program{emit: true, layout: newLayout(nil).withLua(testLuaLayout(frames)), wakeupBytes: 4096}
		insns, err := generate(p, m)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns, License: "GPL"}, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats})
		if err != nil {
			t.Fatal(err)
		}
		stats := regexp.MustCompile(`processed (\d+) insns`).FindStringSubmatch(prog.VerifierLog)
		prog.Close()
		if stats == nil {
			t.Fatalf("no statistics in the verifier log: %q", prog.VerifierLog)
		}
		processed[frames], _ = strconv.Atoi(stats[1])
		t.Logf("%d frames: %d instructions, %d processed by the verifier", frames, len(insns), processed[frames])
	}
	// Linear: 6 times the frames may cost at most 10 times the work.
	if processed[lua.DefaultMaxFrames] > 10*processed[4] {
		t.Errorf("the verifier processed %d instructions for %d frames, %d for 4: the walk's cost grows faster than its frames", processed[lua.DefaultMaxFrames], lua.DefaultMaxFrames, processed[4])
	}
}
