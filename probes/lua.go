package probes

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Names of the values of the Lua walk a probe can print (Probe.Lua).
const (
	// LuaWhere is "source:line" of the Lua code running at the hit
	// (lua.Stack.Where).
	LuaWhere = "$lua_where"
	// LuaChunk is the chunk of that code, as debug.traceback() names it.
	LuaChunk = "$lua_chunk"
)

// LuaValueNames lists the Lua values, for suggestions.
var LuaValueNames = []string{LuaWhere, LuaChunk}

// LuaValue is a value of the Lua walk among a probe's values.
type LuaValue struct {
	Name string // LuaWhere or LuaChunk
	// At is its index in Event.Values, among the values of Probe.Values.
	At int
}

// ErrNoLuaWalk: a probe needs the Lua walk, and Options.Lua is nil.
var ErrNoLuaWalk = errors.New("no Lua walk")

// MaxLuaChunkMatch bounds the chunk name a filter compares: the tail of
// a long chunk name the walk keeps.
const MaxLuaChunkMatch = lua.ChunkCap - lua.ChunkHead - 1

// LuaChunkMatch keeps a hit whose Lua stack has a frame of the chunk
// (Negate: has none): a Lua function whose chunk, as debug.traceback()
// names it, is Chunk or ends in "/" + Chunk ("auth.lua" matches
// "@/etc/nginx/lua/auth.lua"; "access_by_lua(nginx.conf:58)" an inline
// block).
type LuaChunkMatch struct {
	Chunk  string
	Negate bool
}

// luaChunkFilter tests the matches on the frames the walk copied into
// the section at sec; a hit that fails is discarded, and the program
// goes on at drop.
func (e *emitter) luaChunkFilter(sec int, lj *lua.Layout, matches []LuaChunkMatch, drop string) error {
	s := int16(sec)
	for _, m := range matches {
		n := len(m.Chunk)
		if n == 0 || n > MaxLuaChunkMatch {
			return fmt.Errorf("a chunk name of %d bytes: at most %d are compared", n, MaxLuaChunkMatch)
		}
		found := e.label("lua_found")
		none := e.label("lua_none")
		for i := range lj.MaxFrames {
			rec := s + lua.SecFrameRecs + int16(i*lua.FrameSize)
			next := e.label("lua_cnext")
			long := e.label("lua_clong")
			cmp := e.label("lua_ccmp")
			e.emit(
				asm.LoadMem(asm.R1, regEvent, s+lua.SecFrames, asm.Byte),
				asm.JLE.Imm(asm.R1, int32(i), none),
				asm.LoadMem(asm.R1, regEvent, rec+lua.FrFlags, asm.Byte),
				// Frames of a chunk already compared carry FlagChunkSame.
				asm.And.Imm(asm.R1, lua.FlagChunk),
				asm.JEq.Imm(asm.R1, 0, next),
				asm.LoadMem(asm.R2, regEvent, rec+lua.FrChunkLen, asm.Word),
				asm.JGT.Imm(asm.R2, lua.ChunkCap, long),
				// The whole name: its last n bytes, after one more byte at least
				// (the '@' or '=' LuaJIT puts first).
				asm.JLT.Imm(asm.R2, int32(n+1), next),
				asm.Add.Imm(asm.R2, int32(-n)),
				asm.Mov.Reg(asm.R3, regEvent),
				asm.Add.Imm(asm.R3, int32(rec+lua.FrChunk)),
				asm.Add.Reg(asm.R3, asm.R2),
				asm.Ja.Label(cmp),
			)
			e.mark(long)
			// A long name: the walk kept its tail.
			e.emit(
				asm.Mov.Reg(asm.R3, regEvent),
				asm.Add.Imm(asm.R3, int32(rec+lua.FrChunk+lua.ChunkCap-int16(n))),
				asm.Mov.Imm(asm.R2, 2), // not the name's first byte: the one before must be '/'
			)
			e.mark(cmp)
			for k := range n {
				e.emit(
					asm.LoadMem(asm.R1, asm.R3, int16(k), asm.Byte),
					asm.JNE.Imm(asm.R1, int32(m.Chunk[k]), next),
				)
			}
			// All of the name after its '@' or '=', or a path's last part.
			e.emit(
				asm.JEq.Imm(asm.R2, 1, found),
				asm.LoadMem(asm.R1, asm.R3, -1, asm.Byte),
				asm.JEq.Imm(asm.R1, '/', found),
			)
			e.mark(next)
			e.emit(asm.Mov.Imm(asm.R0, 0))
		}
		e.emit(asm.Ja.Label(none))
		kept, dropped := found, none
		if m.Negate {
			kept, dropped = none, found
		}
		keep := e.label("lua_keep")
		e.mark(dropped)
		// No wakeup: a discarded record is nothing to read, and waking the
		// reader for each costs more than the walk.
		e.emit(
			asm.Mov.Reg(asm.R1, regEvent),
			asm.Mov.Imm(asm.R2, rbNoWakeup),
			asm.FnRingbufDiscard.Call(),
			asm.Ja.Label(drop),
		)
		e.mark(kept)
		e.emit(asm.Ja.Label(keep))
		e.mark(keep)
		e.emit(asm.Mov.Imm(asm.R0, 0))
	}
	return nil
}

// whereFrames bounds the walk of a probe that prints Lua values but no
// stack: the gateway's code is rarely deeper than a few library frames.
const whereFrames = 12

// luaValue is the Event value of v, from the hit's Lua stack (nil when
// the session walks none).
func luaValue(v LuaValue, st *lua.Stack, why string) Value {
	out := Value{Expr: v.Name, Text: "<unknown>"}
	switch {
	case st == nil:
		out.Why = why
		return out
	case st.Status != lua.StatusOK:
		out.Why = st.Why
		return out
	}
	f, ok := st.Where()
	if !ok {
		out.Why = "no Lua frame at the hit"
		return out
	}
	s := lua.ShortSource(f.Source)
	if v.Name == LuaWhere {
		s = f.Where()
	}
	out.Readable, out.JSON, out.Text, out.Raw = true, s, strconv.Quote(s), []byte(s)
	return out
}

// noLuaWhy says why a session has no Lua walk, for its Lua values.
func noLuaWhy(lj *lua.Layout) string {
	if lj == nil {
		return "no Lua walk in this trace (see the note when it attached)"
	}
	return fmt.Sprintf("no Lua walk (%s)", lj.Library)
}

// Stack slots of the Lua walk, below the prefix cache; what the walk
// carries from frame to frame is in the record (lua.SecWalk*).
const (
	luaTop     = cacheTop - 8*maxCacheSlots
	luaTmpSlot = luaTop     // helper reads land here
	luaGSlot   = luaTop - 8 // global_State
)

// gcMask is LJ_GCVMASK: the pointer bits of a GC64 TValue.
const gcMask = 1<<47 - 1

// luaWalk copies the running coroutine's Lua frames into the record's Lua
// section at sec (package lua's record format): from nginx's globals to
// the lua_State, then frame by frame, each with its function, proto,
// lineinfo entry and chunk name, up to lj.MaxFrames frames. The walk is
// unrolled: a bounded loop of its size costs older verifiers more.
//
// With p.luaState, the walk starts from that lua_State: a coroutine the
// hit is about to resume has its frames but is not running (no cframe,
// not cur_L), so it is neither idle nor in a trace unless it is cur_L
// inside the VM.
func (e *emitter) luaWalk(p program, sec int, lj *lua.Layout) error {
	s := int16(sec)
	done := e.label("lua_done")
	ok := e.label("lua_ok")
	fault := e.label("lua_fault")
	idle := e.label("lua_idle")

	// Ring-buffer memory is not zeroed: write every header field first.
	e.emit(
		asm.StoreImm(regEvent, s+lua.SecStatus, int64(lua.StatusFault), asm.Byte),
		asm.StoreImm(regEvent, s+lua.SecFrames, 0, asm.Byte),
		asm.StoreImm(regEvent, s+lua.SecFlags, 0, asm.Byte),
		asm.StoreImm(regEvent, s+lua.SecStep, 0, asm.Byte),
		asm.StoreImm(regEvent, s+lua.SecVMState, 0, asm.Word),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(regEvent, s+lua.SecState, asm.R1, asm.DWord),
		asm.StoreMem(regEvent, s+lua.SecTrace, asm.R1, asm.DWord),
		asm.StoreMem(regEvent, s+lua.SecWalkChunk, asm.R1, asm.DWord),
		asm.StoreImm(regEvent, s+lua.SecTraceRec+lua.FrFlags, 0, asm.Byte),
	)

	// step reads the pointer at regBase+off into regBase.
	step := 0
	load := func(off int64) {
		e.emit(asm.StoreImm(regEvent, s+lua.SecStep, int64(step), asm.Byte))
		e.readTo(asm.RFP, luaTmpSlot, 8, off, fault)
		e.emit(asm.LoadMem(regBase, asm.RFP, luaTmpSlot, asm.DWord))
		step++
	}
	// index adds 8 * the module index at addr to regBase. A module index
	// is small: a larger one is not nginx's.
	index := func(addr uint64) {
		e.emit(
			asm.StoreImm(regEvent, s+lua.SecStep, int64(step), asm.Byte),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, luaTmpSlot),
			asm.Mov.Imm(asm.R2, 8),
			asm.LoadImm(asm.R3, int64(addr), asm.DWord),
			asm.FnProbeReadUser.Call(),
			asm.JNE.Imm(asm.R0, 0, fault),
			asm.LoadMem(asm.R1, asm.RFP, luaTmpSlot, asm.DWord),
			asm.JGT.Imm(asm.R1, 4096, fault),
			asm.LSh.Imm(asm.R1, 3),
			asm.Add.Reg(regBase, asm.R1),
		)
		step++
	}
	e.emit(asm.LoadImm(regBase, int64(lj.CycleAddr), asm.DWord))
	load(0)                                           // ngx_cycle
	load(lj.CycleConfCtx)                             // ->conf_ctx
	index(lj.HTTPModuleAddr + uint64(lj.ModuleIndex)) // [ngx_http_module.index]
	load(0)                                           // the http conf ctx
	load(lj.ConfCtxMainConf)                          // ->main_conf
	index(lj.LuaModuleAddr + uint64(lj.ModuleCtxIndex))
	load(0)              // ngx_http_lua_main_conf_t
	load(lj.MainConfLua) // ->lua: the VM's main thread
	load(lj.StateGlref)  // global_State
	e.emit(asm.StoreMem(asm.RFP, luaGSlot, regBase, asm.DWord))
	load(lj.GlobalCurL) // the running lua_State
	e.emit(asm.StoreMem(regEvent, s+lua.SecState, regBase, asm.DWord))
	notRunning := e.label("lua_suspended")
	if p.luaState != nil {
		// The argument: when it is not cur_L, its stack is suspended, not
		// stale; walk it, with no trace.
		if err := e.pointerPlan(p, p.luaState, fault); err != nil {
			return err
		}
		e.emit(
			asm.LoadMem(asm.R1, regEvent, s+lua.SecState, asm.DWord),
			asm.StoreMem(regEvent, s+lua.SecState, regBase, asm.DWord),
			asm.JNE.Reg(regBase, asm.R1, notRunning),
		)
	}
	// Outside the VM, cur_L is the last one that ran, with a stale stack.
	load(lj.StateCframe)
	if p.luaState != nil {
		e.emit(asm.JEq.Imm(regBase, 0, notRunning))
	} else {
		e.emit(asm.JEq.Imm(regBase, 0, idle))
	}
	e.emit(asm.LoadMem(regBase, regEvent, s+lua.SecState, asm.DWord))
	e.luaStackTop(s, lj, fault)
	e.luaTrace(s, lj)
	if p.luaState != nil {
		skip := e.label("lua_frames")
		e.emit(asm.Ja.Label(skip))
		e.mark(notRunning)
		e.emit(
			asm.StoreImm(regEvent, s+lua.SecFlags, lua.SecSuspended, asm.Byte),
			asm.LoadMem(regBase, regEvent, s+lua.SecState, asm.DWord),
		)
		e.luaStackTop(s, lj, fault)
		e.mark(skip)
		e.emit(asm.Mov.Imm(asm.R0, 0))
	}

	for i := range lj.MaxFrames {
		e.luaFrame(s, lj, i, ok)
	}
	// Frames are left: the stack is deeper than the copy.
	e.emit(
		asm.LoadMem(regBase, regEvent, s+lua.SecWalkFrame, asm.DWord),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecWalkBot, asm.DWord),
		asm.JLE.Reg(regBase, asm.R1, ok),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecFlags, asm.Byte),
		asm.Or.Imm(asm.R1, lua.SecTruncated),
		asm.StoreMem(regEvent, s+lua.SecFlags, asm.R1, asm.Byte),
	)
	e.mark(ok)
	e.emit(
		asm.StoreImm(regEvent, s+lua.SecStatus, int64(lua.StatusOK), asm.Byte),
		asm.Ja.Label(done),
	)
	if p.luaState == nil {
		// The verifier refuses code no jump reaches.
		e.mark(idle)
		e.emit(asm.StoreImm(regEvent, s+lua.SecStatus, int64(lua.StatusIdle), asm.Byte))
	}
	e.mark(fault)
	e.mark(done)
	e.emit(asm.Mov.Imm(asm.R0, 0))
	return nil
}

// luaStackTop reads the stack and base of the lua_State in regBase into
// the walk's slots: the bottom, the first frame, no PC yet.
func (e *emitter) luaStackTop(s int16, lj *lua.Layout, fault string) {
	e.readTo(asm.RFP, luaTmpSlot, 8, lj.StateStack, fault)
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, luaTmpSlot, asm.DWord),
		asm.Add.Imm(asm.R1, 8), // stack[0] is the thread itself (LJ_FR2)
		asm.StoreMem(regEvent, s+lua.SecWalkBot, asm.R1, asm.DWord),
	)
	e.readTo(asm.RFP, luaTmpSlot, 8, lj.StateBase, fault)
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, luaTmpSlot, asm.DWord),
		asm.Add.Imm(asm.R1, -8), // the frame slot is base-1
		asm.StoreMem(regEvent, s+lua.SecWalkFrame, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(regEvent, s+lua.SecWalkPC, asm.R1, asm.DWord),
	)
}

// pointerPlan evaluates a plan that reads a pointer value into regBase:
// its root, then its loads; a fault goes to fault.
func (e *emitter) pointerPlan(p program, plan *symbols.Plan, fault string) error {
	if plan.Read.Kind != symbols.ReadValue {
		return fmt.Errorf("%s: the Lua walk starts from a pointer value", plan.Expr)
	}
	if _, err := e.root(p, plan, fault); err != nil {
		return err
	}
	for _, off := range plan.Loads {
		e.readTo(asm.RFP, luaTmpSlot, 8, off, fault)
		e.emit(asm.LoadMem(regBase, asm.RFP, luaTmpSlot, asm.DWord))
	}
	return nil
}

// luaTrace reads, when the VM runs a JIT trace, its number, its start
// and its base: the frames below the base are materialized, L->base is
// stale.
func (e *emitter) luaTrace(s int16, lj *lua.Layout) {
	out := e.label("lua_trace_done")
	rec := s + lua.SecTraceRec
	e.emit(
		asm.LoadMem(regBase, asm.RFP, luaGSlot, asm.DWord),
		asm.Mov.Reg(asm.R1, regEvent),
		asm.Add.Imm(asm.R1, int32(s+lua.SecVMState)),
		asm.Mov.Imm(asm.R2, 4),
		asm.Mov.Reg(asm.R3, regBase),
		asm.Add.Imm(asm.R3, int32(lj.GlobalVMState)),
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, out),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecVMState, asm.Word),
		// vmstate is a trace number (>= 1) or ~state (negative).
		asm.JSLE.Imm(asm.R1, 0, out),
		asm.JGT.Imm(asm.R1, 65535, out),
	)
	e.readTo(asm.RFP, luaTmpSlot, 8, lj.GlobalJITBase, out)
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, luaTmpSlot, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, out),
		asm.Add.Imm(asm.R1, -8),
		asm.StoreMem(regEvent, s+lua.SecWalkFrame, asm.R1, asm.DWord),
		// J = G - offsetof(GG_State, g) + offsetof(GG_State, J)
		asm.Add.Imm(regBase, int32(lj.GlobalToJIT)),
	)
	e.readTo(asm.RFP, luaTmpSlot, 8, lj.JITTrace, out)
	e.emit(
		asm.LoadMem(regBase, asm.RFP, luaTmpSlot, asm.DWord),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecVMState, asm.Word),
		asm.LSh.Imm(asm.R1, 3),
		asm.Add.Reg(regBase, asm.R1),
	)
	e.readTo(asm.RFP, luaTmpSlot, 8, 0, out)
	e.emit(asm.LoadMem(regBase, asm.RFP, luaTmpSlot, asm.DWord))
	e.readTo(regEvent, rec+lua.FrPC, 8, lj.TraceStartPC, out)
	e.readTo(asm.RFP, luaTmpSlot, 8, lj.TraceStartPt, out)
	e.emit(
		asm.StoreMem(regEvent, s+lua.SecTrace, regBase, asm.DWord),
		asm.LoadMem(regBase, asm.RFP, luaTmpSlot, asm.DWord),
		asm.Add.Imm(regBase, int32(lj.ProtoSize)), // the bytecode follows the proto
		asm.StoreMem(regEvent, rec+lua.FrFn, regBase, asm.DWord),
	)
	e.luaProto(s, rec, lj, false, out)
	e.mark(out)
	e.emit(asm.Mov.Imm(asm.R0, 0))
}

// luaFrame reads frame i, whose link slot is at lua.SecWalkFrame, and
// moves lua.SecWalkFrame to the frame below; a frame at or below the bottom ends
// the walk at end.
func (e *emitter) luaFrame(s int16, lj *lua.Layout, i int, end string) {
	rec := s + lua.SecFrameRecs + int16(i*lua.FrameSize)
	prev := e.label("lua_prev")
	nonLua := e.label("lua_nonlua")
	next := e.label("lua_next")
	e.emit(
		asm.LoadMem(regBase, regEvent, s+lua.SecWalkFrame, asm.DWord),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecWalkBot, asm.DWord),
		asm.JLE.Reg(regBase, asm.R1, end),
		asm.StoreImm(regEvent, rec+lua.FrFlags, 0, asm.Byte),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecWalkPC, asm.DWord),
		asm.StoreMem(regEvent, rec+lua.FrPC, asm.R1, asm.DWord),
	)
	// The function slot and the link, below base.
	e.readTo(regEvent, rec+lua.FrFunc, 16, -8, end)
	e.emit(
		asm.StoreImm(regEvent, s+lua.SecFrames, int64(i+1), asm.Byte),
		asm.LoadMem(regBase, regEvent, rec+lua.FrFunc, asm.DWord),
		asm.LoadImm(asm.R1, gcMask, asm.DWord),
		asm.And.Reg(regBase, asm.R1),
	)
	e.readTo(regEvent, rec+lua.FrFn, lua.FrProto-lua.FrFn, 0, prev)
	e.orFlags(rec, lua.FlagFn)
	e.emit(
		asm.LoadMem(asm.R1, regEvent, rec+lua.FrFn+int16(lj.FuncFFID), asm.Byte),
		asm.JNE.Imm(asm.R1, 0, prev), // not a Lua function
		asm.LoadMem(regBase, regEvent, rec+lua.FrFn+int16(lj.FuncPC), asm.DWord),
	)
	e.luaProto(s, rec, lj, true, prev)

	// The frame below: a Lua link is the return PC into the caller, whose
	// CALL instruction's A operand sizes the caller's frame.
	e.mark(prev)
	e.emit(
		asm.LoadMem(regBase, regEvent, rec+lua.FrLink, asm.DWord),
		asm.Mov.Reg(asm.R2, regBase),
		asm.And.Imm(asm.R2, 3),
		asm.JNE.Imm(asm.R2, 0, nonLua),
		asm.StoreMem(regEvent, s+lua.SecWalkPC, regBase, asm.DWord),
	)
	e.readTo(asm.RFP, luaTmpSlot, 4, -4, end)
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, luaTmpSlot, asm.Word),
		asm.RSh.Imm(asm.R1, 8),
		asm.And.Imm(asm.R1, 0xff),
		asm.Add.Imm(asm.R1, 2),
		asm.LSh.Imm(asm.R1, 3),
		asm.LoadMem(regBase, regEvent, s+lua.SecWalkFrame, asm.DWord),
		asm.Sub.Reg(regBase, asm.R1),
		asm.StoreMem(regEvent, s+lua.SecWalkFrame, regBase, asm.DWord),
		asm.Ja.Label(next),
	)
	// Otherwise a delta with the type in the low 3 bits; a continuation
	// keeps its caller's PC two slots down.
	e.mark(nonLua)
	skipCont := e.label("lua_nocont")
	e.emit(
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(regEvent, s+lua.SecWalkPC, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R2, regBase),
		asm.And.Imm(asm.R2, 7),
		asm.JNE.Imm(asm.R2, 2, skipCont), // FRAME_CONT
		asm.LoadMem(regBase, regEvent, s+lua.SecWalkFrame, asm.DWord),
	)
	e.readTo(regEvent, s+lua.SecWalkPC, 8, -16, skipCont)
	e.mark(skipCont)
	e.emit(
		asm.LoadMem(asm.R1, regEvent, rec+lua.FrLink, asm.DWord),
		asm.And.Imm(asm.R1, -8),
		asm.LoadMem(regBase, regEvent, s+lua.SecWalkFrame, asm.DWord),
		asm.Sub.Reg(regBase, asm.R1),
		asm.StoreMem(regEvent, s+lua.SecWalkFrame, regBase, asm.DWord),
	)
	e.mark(next)
	e.emit(asm.Mov.Imm(asm.R0, 0))
}

// luaProto copies, for the Lua function whose bytecode starts at
// regBase, its proto's members, the lineinfo entry of the PC in the
// record, and its chunk name (unless it is the one read last).
// afterCall: the PC is a return address, one past the current
// instruction. Every exit goes to out.
func (e *emitter) luaProto(s, rec int16, lj *lua.Layout, afterCall bool, out string) {
	proto := rec + lua.FrProto
	at := func(off int64) int16 { return proto + int16(off-lj.ProtoLo) }
	e.readTo(regEvent, proto, int(lj.ProtoHi-lj.ProtoLo), -lj.ProtoSize+lj.ProtoLo, out)
	e.orFlags(rec, lua.FlagProto)

	// The line: lineinfo[pos-1], entries of 1, 2 or 4 bytes by numline
	// (lj_debug_line). pos 0 and sizebc need no entry.
	chunk := e.label("lua_chunk")
	w2 := e.label("lua_w2")
	w4 := e.label("lua_w4")
	read := e.label("lua_lread")
	e.emit(
		asm.LoadMem(asm.R1, regEvent, rec+lua.FrPC, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, chunk),
		asm.JLT.Reg(asm.R1, regBase, chunk),
		asm.Sub.Reg(asm.R1, regBase),
		asm.RSh.Imm(asm.R1, 2),
	)
	if afterCall {
		e.emit(asm.Add.Imm(asm.R1, -1))
	}
	e.emit(
		asm.JEq.Imm(asm.R1, 0, chunk),
		asm.LoadMem(asm.R2, regEvent, at(lj.ProtoSizeBC), asm.Word),
		asm.JGE.Reg(asm.R1, asm.R2, chunk),
		asm.Add.Imm(asm.R1, -1),
		asm.StoreImm(regEvent, rec+lua.FrLine, 0, asm.Word),
		asm.LoadMem(asm.R3, regEvent, at(lj.ProtoLineInfo), asm.DWord),
		asm.LoadMem(asm.R4, regEvent, at(lj.ProtoNumLine), asm.Word),
		asm.JGE.Imm(asm.R4, 256, w2),
		asm.Mov.Imm(asm.R2, 1),
		asm.Ja.Label(read),
	)
	e.mark(w2)
	e.emit(
		asm.JGE.Imm(asm.R4, 65536, w4),
		asm.LSh.Imm(asm.R1, 1),
		asm.Mov.Imm(asm.R2, 2),
		asm.Ja.Label(read),
	)
	e.mark(w4)
	e.emit(
		asm.LSh.Imm(asm.R1, 2),
		asm.Mov.Imm(asm.R2, 4),
	)
	e.mark(read)
	e.emit(
		asm.JLT.Imm(asm.R3, nullPage, chunk),
		asm.Add.Reg(asm.R3, asm.R1),
		asm.Mov.Reg(asm.R1, regEvent),
		asm.Add.Imm(asm.R1, int32(rec+lua.FrLine)),
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, chunk),
	)
	e.orFlags(rec, lua.FlagLine)

	// The chunk name, unless the frame above had the same.
	e.mark(chunk)
	same := e.label("lua_same")
	long := e.label("lua_long")
	e.emit(
		asm.LoadMem(regBase, regEvent, at(lj.ProtoChunkName), asm.DWord),
		asm.LoadMem(asm.R1, regEvent, s+lua.SecWalkChunk, asm.DWord),
		asm.JEq.Reg(regBase, asm.R1, same),
	)
	e.readTo(regEvent, rec+lua.FrChunkLen, 4, lj.StrLen, out)
	e.emit(
		asm.StoreMem(regEvent, s+lua.SecWalkChunk, regBase, asm.DWord),
		asm.LoadMem(asm.R2, regEvent, rec+lua.FrChunkLen, asm.Word),
		asm.JEq.Imm(asm.R2, 0, out),
		asm.JGT.Imm(asm.R2, lua.ChunkCap, long),
		asm.Mov.Reg(asm.R1, regEvent),
		asm.Add.Imm(asm.R1, int32(rec+lua.FrChunk)),
		asm.Mov.Reg(asm.R3, regBase),
		asm.Add.Imm(asm.R3, int32(lj.StrSize)),
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, out),
	)
	e.orFlags(rec, lua.FlagChunk)
	e.emit(asm.Ja.Label(out))
	// A long name: its head, which says what it is, and its tail.
	e.mark(long)
	e.readTo(regEvent, rec+lua.FrChunk, lua.ChunkHead, lj.StrSize, out)
	e.emit(
		asm.Mov.Reg(asm.R1, regEvent),
		asm.Add.Imm(asm.R1, int32(rec+lua.FrChunk+lua.ChunkHead)),
		asm.Mov.Imm(asm.R2, lua.ChunkCap-lua.ChunkHead),
		asm.LoadMem(asm.R3, regEvent, rec+lua.FrChunkLen, asm.Word),
		asm.Add.Reg(asm.R3, regBase),
		asm.Add.Imm(asm.R3, int32(lj.StrSize-(lua.ChunkCap-lua.ChunkHead))),
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, out),
	)
	e.orFlags(rec, lua.FlagChunk)
	e.emit(asm.Ja.Label(out))
	e.mark(same)
	e.orFlags(rec, lua.FlagChunkSame)
}

// orFlags sets flag bits of a frame record.
func (e *emitter) orFlags(rec int16, flag int32) {
	e.emit(
		asm.LoadMem(asm.R1, regEvent, rec+lua.FrFlags, asm.Byte),
		asm.Or.Imm(asm.R1, flag),
		asm.StoreMem(regEvent, rec+lua.FrFlags, asm.R1, asm.Byte),
	)
}
