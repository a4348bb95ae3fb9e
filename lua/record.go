package lua

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// The Lua section of an event record, as the BPF walk writes it: a
// header, the record of the running trace's start, then one record per
// frame, innermost first. Package probes emits the walk from these
// offsets; Decode reads them.
const (
	// Header.
	SecStatus  = 0  // u8: Status
	SecFrames  = 1  // u8: frame records written
	SecFlags   = 2  // u8: SecTruncated, SecSuspended
	SecStep    = 3  // u8: the read that failed, for StatusFault
	SecVMState = 4  // i32: global_State.vmstate
	SecState   = 8  // u64: the running lua_State
	SecTrace   = 16 // u64: the running GCtrace, 0 outside traces
	// The walk's own state, kept in the record rather than on the BPF
	// stack: the verifier tracks no value it reads back from here, so
	// every frame starts from the same state and verifying the unrolled
	// walk stays linear in its frames.
	SecWalkFrame = 24 // u64: the frame being read (its link slot)
	SecWalkBot   = 32 // u64: lua_State.stack + one slot: the walk ends there
	SecWalkPC    = 40 // u64: the current PC of the next frame down, 0 unknown
	SecWalkChunk = 48 // u64: the last chunk name read
	SecTraceRec  = 56 // a frame record: the trace's start (proto and pc)
	SecFrameRecs = SecTraceRec + FrameSize

	// One frame record.
	FrFunc     = 0  // u64: the frame's function slot (a GC64 TValue)
	FrLink     = 8  // u64: the frame link (return PC or delta and type)
	FrPC       = 16 // u64: the frame's current PC, from the frame above; 0 unknown
	FrFlags    = 24 // u8: Flag*
	FrLine     = 28 // u32: the lineinfo entry for the PC
	FrFn       = 32 // the function's first FnWindow bytes
	FrProto    = FrFn + fnWindow
	FrChunkLen = FrProto + protoWindow // u32: the chunk name's length
	FrChunk    = FrChunkLen + 8        // ChunkCap bytes of it
	FrameSize  = FrChunk + ChunkCap

	// ChunkCap bounds a chunk name's copy. A longer name keeps its first
	// ChunkHead bytes and its tail: enough for debug.traceback()'s
	// short_src, which keeps the last 56 bytes of a path.
	ChunkCap  = 96
	ChunkHead = 8

	fnWindow       = 48
	protoWindow    = 96
	maxFramesLimit = 64
)

// Header flags (SecFlags).
const (
	// SecTruncated: the stack is deeper than the frames copied.
	SecTruncated = 1 << 0
	// SecSuspended: the walk read a coroutine that is not running, the
	// probed function's lua_State argument (one about to be resumed).
	SecSuspended = 1 << 1
)

// Frame record flags.
const (
	FlagFn        = 1 << 0 // the function was read
	FlagProto     = 1 << 1 // its proto was read
	FlagLine      = 1 << 2 // the lineinfo entry was read
	FlagChunkSame = 1 << 3 // the chunk name is the previous frame's
	FlagChunk     = 1 << 4 // the chunk name was read
)

// Status says how far the walk got.
type Status uint8

const (
	StatusNone  Status = iota // no walk in this record
	StatusOK                  // frames were read
	StatusIdle                // no Lua was running at the hit
	StatusFault               // a read on the way to the lua_State failed
)

// Steps of the way to the running lua_State, for StatusFault.
var steps = []string{
	"ngx_cycle", "ngx_cycle->conf_ctx", "ngx_http_module.index", "the http conf", "its main_conf",
	"ngx_http_lua_module.ctx_index", "the lua main conf", "the Lua VM", "global_State", "cur_L", "the lua_State",
}

// NumSteps is how many steps the way to the lua_State has.
var NumSteps = len(steps)

// SectionSize is the bytes of a record's Lua section for maxFrames.
func SectionSize(maxFrames int) int { return SecFrameRecs + maxFrames*FrameSize }

// Size is the bytes of the Lua section the layout's walk writes.
func (l *Layout) Size() int { return SectionSize(l.MaxFrames) }

// Lua frame-link types (lj_frame.h): the low bits of a link.
const (
	frameLua   = 0
	frameC     = 1
	frameCont  = 2
	frameVarg  = 3
	frameCP    = 5
	frameType  = 3
	frameTypeP = 7
)

// gcMask is LJ_GCVMASK (lj_obj.h): the pointer in a GC64 TValue.
const gcMask = 1<<47 - 1

// FrameKind is what kind of function a frame runs.
type FrameKind uint8

const (
	KindUnknown FrameKind = iota // the function could not be read
	KindLua                      // a Lua function
	KindC                        // a C function (lua_CFunction)
	KindBuiltin                  // a fast function, LuaJIT's builtins
)

// Frame is one Lua frame.
type Frame struct {
	Kind FrameKind
	// Source is the chunk name as LuaJIT keeps it:
	// "=access_by_lua(nginx.conf:14)", "@/etc/nginx/lua/auth.lua".
	Source string
	// Line is the current line; 0 when it is not known.
	Line int
	// FirstLine is where the function is defined; 0 for a main chunk.
	FirstLine int
	// CFunc is a C function's address in the process.
	CFunc uint64
	// FFID numbers a builtin (LuaJIT's lj_ffdef.h).
	FFID int
	// Entry: C code entered the VM here (lua_pcall, lua_resume); the
	// frames below are under other C frames.
	Entry bool
	// Caller is where a Lua function called this frame's function, when
	// the walk copied it: what a Namer needs to name the function.
	Caller *CallSite
	// Name and NameWhat are the function's name and what kind of name it
	// is ("local", "global", "field", "method", "upvalue",
	// "metamethod"), as lua_getinfo's "n" gives them; empty when not
	// known (Namer sets them).
	Name, NameWhat string
}

// CallSite is a call from a Lua function, as the walk copied it at the
// hit: the caller's proto and the return address of its call
// instruction, with the proto members that identify it.
type CallSite struct {
	Proto     uint64 // the caller's GCproto
	ReturnPC  uint64 // the instruction after the call
	ChunkName uint64 // GCstr of its chunk name
	SizeBC    uint32
	FirstLine uint32
	NumLine   uint32
}

// Stack is the Lua stack of one hit.
type Stack struct {
	Status Status
	// Frames, innermost first. In a JIT trace, the frames below the
	// trace's base: the trace's own frames are not materialized.
	Frames    []Frame
	Truncated bool
	// Suspended: the frames are of a coroutine that was not running at
	// the hit (the probed function's lua_State argument, waiting to be
	// resumed), not of the code that called the probed function.
	Suspended bool
	// Trace is set when the hit was in code a JIT trace called.
	Trace *Trace
	// Why says why there are no frames (Status other than StatusOK).
	Why string
}

// Trace is a running JIT trace.
type Trace struct {
	Number int
	// Start is the function and line where the trace begins.
	Start Frame
}

// Decode reads the Lua section sec that a walk with layout l wrote.
func (l *Layout) Decode(sec []byte) Stack {
	if len(sec) < SecFrameRecs {
		return Stack{Why: "short record"}
	}
	st := Stack{Status: Status(sec[SecStatus])}
	switch st.Status {
	case StatusOK:
	case StatusIdle:
		st.Why = "no Lua running"
		return st
	case StatusFault:
		step := int(sec[SecStep])
		what := "?"
		if step < len(steps) {
			what = steps[step]
		}
		st.Why = fmt.Sprintf("reading %s failed", what)
		return st
	default:
		st.Why = "not walked"
		return st
	}
	le := binary.LittleEndian
	state := le.Uint64(sec[SecState:])
	n := min(int(sec[SecFrames]), l.MaxFrames, (len(sec)-SecFrameRecs)/FrameSize)
	st.Truncated = sec[SecFlags]&SecTruncated != 0
	st.Suspended = sec[SecFlags]&SecSuspended != 0
	var chunk string
	if le.Uint64(sec[SecTrace:]) != 0 {
		// The walk reads the trace's start first: its chunk name may be
		// the one the first frame's FlagChunkSame refers to.
		rec := sec[SecTraceRec : SecTraceRec+FrameSize]
		var start Frame
		start, chunk = l.luaFrame(rec, "", false)
		st.Trace = &Trace{Number: int(int32(le.Uint32(sec[SecVMState:]))), Start: start}
	}
	skipNext := false
	recs := func(i int) []byte { return sec[SecFrameRecs+i*FrameSize : SecFrameRecs+(i+1)*FrameSize] }
	for i := range n {
		rec := sec[SecFrameRecs+i*FrameSize : SecFrameRecs+(i+1)*FrameSize]
		fn := le.Uint64(rec[FrFunc:]) & gcMask
		link := le.Uint64(rec[FrLink:])
		skip := skipNext || fn == state // a dummy frame (lj_err_optype_call)
		skipNext = link&frameTypeP == frameVarg
		f := Frame{Entry: link&frameType != frameLua && (link&frameTypeP == frameC || link&frameTypeP == frameCP)}
		flags := rec[FrFlags]
		if flags&FlagFn != 0 {
			switch ffid := int(rec[FrFn+l.FuncFFID]); ffid {
			case 0:
				entry := f.Entry
				f, chunk = l.luaFrame(rec, chunk, true)
				f.Entry = entry
			case 1:
				f.Kind, f.CFunc = KindC, le.Uint64(rec[FrFn+l.FuncCF:])
			default:
				f.Kind, f.FFID = KindBuiltin, ffid
			}
		}
		if skip {
			// The varg frame below a vararg function's frame is the same
			// call: count it once, as lj_debug_frame does. Its Entry
			// stays with the call.
			if len(st.Frames) > 0 && f.Entry {
				st.Frames[len(st.Frames)-1].Entry = true
			}
			continue
		}
		f.Caller = l.callSite(recs, i, n)
		st.Frames = append(st.Frames, f)
	}
	return st
}

// callSite finds who called the function of frame record i: the caller
// is the next record down, unless i is a vararg function's frame, whose
// real frame (and link) is the next one (lj_debug_funcname).
func (l *Layout) callSite(rec func(int) []byte, i, n int) *CallSite {
	le := binary.LittleEndian
	link := le.Uint64(rec(i)[FrLink:])
	if link&frameTypeP == frameVarg {
		if i+1 >= n {
			return nil
		}
		i++
		link = le.Uint64(rec(i)[FrLink:])
	}
	if i+1 >= n {
		return nil
	}
	caller := rec(i + 1)
	switch {
	case link&frameType == frameLua:
	case link&frameTypeP == frameCont:
		// A metamethod the VM called: the caller's PC is in the
		// continuation, which the walk copied as the caller's PC.
		link = le.Uint64(caller[FrPC:])
		if link == 0 {
			return nil
		}
	default:
		return nil
	}
	if caller[FrFlags]&(FlagFn|FlagProto) != FlagFn|FlagProto || caller[FrFn+l.FuncFFID] != 0 {
		return nil
	}
	proto := caller[FrProto:]
	get32 := func(off int64) uint32 { return le.Uint32(proto[off-l.ProtoLo:]) }
	return &CallSite{
		Proto:     le.Uint64(caller[FrFn+l.FuncPC:]) - uint64(l.ProtoSize),
		ReturnPC:  link,
		ChunkName: le.Uint64(proto[l.ProtoChunkName-l.ProtoLo:]),
		SizeBC:    get32(l.ProtoSizeBC),
		FirstLine: get32(l.ProtoFirstLine),
		NumLine:   get32(l.ProtoNumLine),
	}
}

// luaFrame decodes a Lua function's record; prev is the last chunk name
// read, for FlagChunkSame. afterCall: the PC is a return address (a
// frame's), so the current instruction is the one before it.
func (l *Layout) luaFrame(rec []byte, prev string, afterCall bool) (Frame, string) {
	le := binary.LittleEndian
	f := Frame{Kind: KindLua}
	flags := rec[FrFlags]
	if flags&FlagProto == 0 {
		return f, prev
	}
	proto := rec[FrProto:]
	get32 := func(off int64) uint32 { return le.Uint32(proto[off-l.ProtoLo:]) }
	sizebc := int64(get32(l.ProtoSizeBC))
	first := int64(get32(l.ProtoFirstLine))
	numline := int64(get32(l.ProtoNumLine))
	f.FirstLine = int(first)
	switch {
	case flags&FlagChunkSame != 0:
		f.Source = prev
	case flags&FlagChunk != 0:
		f.Source = chunkName(rec)
	}
	pc := le.Uint64(rec[FrPC:])
	bc := le.Uint64(rec[FrFn+l.FuncPC:])
	if rec[FrFlags]&FlagFn == 0 {
		// A trace's start record: the proto was reached without a
		// function; FrFn holds the bytecode start.
		bc = le.Uint64(rec[FrFn:])
	}
	if pc == 0 || pc < bc || (pc-bc)%4 != 0 {
		return f, f.Source
	}
	pos := int64(pc-bc) / 4
	if afterCall {
		pos--
	}
	switch {
	case pos < 0 || pos > sizebc:
		// A PC past the bytecode: lj_trace_exit patched it (JLOOP).
	case pos == sizebc:
		f.Line = int(first + numline)
	case pos == 0:
		f.Line = int(first)
	case flags&FlagLine != 0:
		entry := int64(le.Uint32(rec[FrLine:]))
		switch {
		case numline < 256:
			entry &= 0xff
		case numline < 65536:
			entry &= 0xffff
		}
		f.Line = int(first + entry)
	}
	return f, f.Source
}

// chunkName reassembles a chunk name from its record: whole, or its head
// and tail around "...".
func chunkName(rec []byte) string {
	n := int(binary.LittleEndian.Uint32(rec[FrChunkLen:]))
	data := rec[FrChunk : FrChunk+ChunkCap]
	if n <= ChunkCap {
		return string(data[:n])
	}
	// The head keeps the '=' or '@' that says what the name is.
	return string(data[:ChunkHead]) + "\x00" + string(data[ChunkHead:])
}

// ShortSource is debug.traceback()'s short_src of a chunk name
// (lj_debug_shortname): "=name" without the '=', "@path" without the '@'
// and, when 60 bytes or longer, "..." and its last 56 bytes.
func ShortSource(src string) string {
	const idSize = 60 // LUA_IDSIZE
	head, tail, cut := strings.Cut(src, "\x00")
	switch {
	case src == "":
		return "?"
	case src[0] == '=':
		s := strings.TrimPrefix(head, "=")
		if len(s) > idSize-1 {
			s = s[:idSize-1]
		}
		return s
	case src[0] == '@':
		if cut {
			return "..." + tail[max(0, len(tail)-(idSize-4)):]
		}
		s := src[1:]
		if len(s) >= idSize {
			s = "..." + s[len(s)-(idSize-4):]
		}
		return s
	default:
		s := head
		for i := 0; i < len(s); i++ {
			if s[i] < ' ' {
				s = s[:i]
				break
			}
		}
		if cut || len(s) < len(head) || len(s) > idSize-12 {
			return fmt.Sprintf("[string %q...]", s[:min(len(s), idSize-15)])
		}
		return fmt.Sprintf("[string %q]", s)
	}
}

// String is the frame as debug.traceback() prints it when it knows no
// name for the function: "auth.lua:10: in function <auth.lua:8>",
// "access_by_lua(nginx.conf:14):3: in main chunk", "[C]: at 0x7f...",
// "[builtin#178]:".
func (f Frame) String() string {
	named := ""
	if f.NameWhat != "" {
		named = fmt.Sprintf(" in function '%s'", f.Name)
	}
	switch f.Kind {
	case KindC:
		if named != "" {
			return "[C]:" + named
		}
		return fmt.Sprintf("[C]: at 0x%x", f.CFunc)
	case KindBuiltin:
		if named != "" {
			return "[C]:" + named
		}
		return fmt.Sprintf("[builtin#%d]:", f.FFID)
	case KindUnknown:
		return "?: (function unreadable)"
	}
	src := ShortSource(f.Source)
	var b strings.Builder
	b.WriteString(src)
	b.WriteString(":")
	if f.Line > 0 {
		fmt.Fprintf(&b, "%d:", f.Line)
	}
	switch {
	case named != "":
		b.WriteString(named)
	case f.FirstLine == 0:
		b.WriteString(" in main chunk")
	default:
		fmt.Fprintf(&b, " in function <%s:%d>", src, f.FirstLine)
	}
	return b.String()
}

// Where is the frame's "source:line", as $lua_where prints it.
func (f Frame) Where() string {
	if f.Kind != KindLua {
		return f.String()
	}
	if f.Line > 0 {
		return fmt.Sprintf("%s:%d", ShortSource(f.Source), f.Line)
	}
	return ShortSource(f.Source) + ":?"
}

// Where is the frame $lua_where names: the innermost Lua frame of the
// gateway's own code. Frames of builtins, of C functions and of
// lua-resty-core (the Lua side of ngx.*: resty/core*.lua, ngx/*.lua) are
// passed over, so that at ngx_http_lua_ffi_exit it is the line that
// called ngx.exit, not resty.core's own; when every Lua frame is
// lua-resty-core's, the innermost of them. ok is false with no Lua frame.
func (st Stack) Where() (Frame, bool) {
	var first *Frame
	for i := range st.Frames {
		f := &st.Frames[i]
		if f.Kind != KindLua {
			continue
		}
		if first == nil {
			first = f
		}
		if !IsRestyCore(f.Source) {
			return *f, true
		}
	}
	if first != nil {
		return *first, true
	}
	return Frame{}, false
}

// IsRestyCore reports whether a chunk name is a file of lua-resty-core:
// resty/core.lua, resty/core/*.lua or ngx/*.lua.
func IsRestyCore(source string) bool {
	if !strings.HasPrefix(source, "@") {
		return false
	}
	return strings.HasSuffix(source, "/resty/core.lua") || strings.Contains(source, "/resty/core/") || strings.Contains(source, "/ngx/")
}
