package lua

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"sync"
)

// Bounds of what a Namer reads from the traced process: its memory is
// not trusted, so no read, loop or cache grows with what it says.
const (
	// maxProtoSize bounds a GCproto's read: its sizept bytes, the struct
	// with its bytecode, constants and debug info. Real functions are
	// kilobytes; a bigger proto (a huge generated main chunk) is not
	// named.
	maxProtoSize = 1 << 20
	// maxNameLen bounds the read of a constant string (a global's or a
	// field's name). A longer name that has no NUL in its first
	// maxNameLen bytes is not given.
	maxNameLen = 256
	// maxCacheBytes bounds the protos and strings a Namer keeps.
	maxCacheBytes = 16 << 20
	// maxSteps bounds the work of naming one call: instructions scanned
	// back and variable records read. Real code takes hundreds at most;
	// crafted bytecode and debug info could otherwise cost sizebc ×
	// varinfo.
	maxSteps = 1 << 20
)

// Built-in local variable names (lj_debug.h VARNAMEDEF): varinfo encodes
// them as bytes 1 to 6, in this order; 0 ends varinfo.
var builtinVarNames = [...]string{
	"(for index)", "(for limit)", "(for step)",
	"(for generator)", "(for state)", "(for control)",
}

const (
	varNameEnd byte = 0
	varNameMax byte = byte(1 + len(builtinVarNames)) // VARNAME__MAX
)

// Namer names the functions of Lua frames the way debug.traceback()
// does (lj_debug_funcname): from the caller's bytecode at the call, its
// local variable names, constants and upvalue names. The walk copies
// only where each call was made (a Frame's Caller); the rest is read
// from the traced process's memory when the stack is decoded.
//
// A GCproto does not change while it is alive, so each is read once
// (its struct, then all its sizept bytes in one read bounded by
// maxProtoSize) and kept, keyed by its address. A proto can be freed and
// its memory reused between the hit and the read, or between two hits:
// what the walk copied at the hit (chunk name pointer, sizebc,
// firstline, numline) must match what is read, or the frame gets no
// name, never a wrong one. A proto that went away and came back with the
// same identity is, but for an unlikely coincidence, the same function
// of the same chunk loaded again, with the same names.
//
// The JIT does patch bytecode in place: a hot loop's or return's
// instruction becomes a JLOOP and back, and ITERN and ISNEXT are
// despecialized to ITERC and JMP for good. No call instruction changes
// but ITERN, and a call made at an ITERN was made by an ITERC (ITERN
// calls nothing): it is named as one. A stale ISNEXT or RETM (JMP and
// JLOOP in the live code) can stop the scan back from a call after a
// loop or a return where LuaJIT's would go on, or the other way round:
// that call gets the name LuaJIT gave it before or after the patch.
//
// A Namer is safe for concurrent use.
type Namer struct {
	l *Layout

	mu     sync.Mutex
	protos map[uint64]*proto
	size   int // bytes held by protos, with their strings
}

// NewNamer returns a Namer for processes with the layout l.
func NewNamer(l *Layout) *Namer {
	return &Namer{l: l, protos: map[uint64]*proto{}}
}

// Name sets Name and NameWhat of every frame of st whose Caller is set
// and whose caller's call can be named; mem reads the process's memory
// (an *os.File of /proc/PID/mem is an io.ReaderAt). Errors are not
// returned: an unreadable or mismatching proto leaves the frame unnamed.
func (n *Namer) Name(mem io.ReaderAt, st *Stack) {
	if n == nil || n.l == nil || mem == nil || st == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range st.Frames {
		f := &st.Frames[i]
		if f.Caller == nil {
			continue
		}
		if name, what, ok := n.funcName(mem, f.Caller); ok {
			f.Name, f.NameWhat = name, what
		}
	}
}

// protoID is what identifies a proto: the members the walk copies at
// the hit.
type protoID struct {
	chunkName                  uint64
	sizeBC, firstLine, numLine uint32
}

// proto is a GCproto as read from the process: all of its sizept bytes.
type proto struct {
	addr uint64
	mem  []byte
	id   protoID

	k, uvInfo, varInfo uint64 // addresses, checked to be inside mem when used
	sizeKGC            uint32
	sizeUV             uint32

	bcOff int64             // where the bytecode starts in mem: sizeof(GCproto)
	strs  map[uint32]string // constant strings read so far, by kgc index
	cost  int               // bytes held, for the Namer's bound
}

// funcName is lj_debug_funcname for the call cs: the name of the
// function it called, and what kind of name that is.
func (n *Namer) funcName(mem io.ReaderAt, cs *CallSite) (name, what string, ok bool) {
	pt := n.proto(mem, cs)
	if pt == nil {
		return "", "", false
	}
	bc := cs.Proto + uint64(pt.bcOff)
	if cs.ReturnPC <= bc || (cs.ReturnPC-bc)%4 != 0 {
		return "", "", false
	}
	// The return PC is after the call: the call is the instruction
	// before it (debug_framepc). A PC past the bytecode is a trace exit's
	// (lj_trace_exit): never a call.
	pos := (cs.ReturnPC-bc)/4 - 1
	if pos >= uint64(pt.id.sizeBC) {
		return "", "", false
	}
	ins, ok := pt.ins(uint32(pos))
	if !ok || int(bcOp(ins)) >= len(opcodes) {
		return "", "", false
	}
	op := bcOp(ins)
	switch mm := opcodes[op].mm; mm {
	case "":
		return "", "", false
	case "call":
		slot := bcA(ins)
		if op == opITERC || op == opITERN {
			slot -= 3 // ITERC calls a copy of the generator, 3 slots up
		}
		s := slotNamer{n: n, mem: mem, pt: pt}
		return s.slotName(uint32(pos), slot)
	default:
		// lj_meta_init interns the metamethod names with their "__".
		return "__" + mm, "metamethod", true
	}
}

// proto returns the caller's proto of cs, read or cached, when it is
// still the one the walk saw; nil otherwise.
func (n *Namer) proto(mem io.ReaderAt, cs *CallSite) *proto {
	want := protoID{chunkName: cs.ChunkName, sizeBC: cs.SizeBC, firstLine: cs.FirstLine, numLine: cs.NumLine}
	if pt := n.protos[cs.Proto]; pt != nil && pt.id == want {
		return pt
	}
	n.forget(cs.Proto)
	pt := n.readProto(mem, cs.Proto, want)
	if pt == nil {
		return nil
	}
	n.remember(pt)
	return pt
}

// readProto reads the proto at addr, when its identity is want: the
// struct first, to learn sizept and to check it cheaply, then all of it.
func (n *Namer) readProto(mem io.ReaderAt, addr uint64, want protoID) *proto {
	l := n.l
	if l.ProtoSize <= 0 || l.ProtoSize > maxProtoSize {
		return nil
	}
	head := make([]byte, l.ProtoSize)
	if !readFull(mem, head, addr) {
		return nil
	}
	if n.parseProto(addr, head, want, false) == nil {
		return nil
	}
	size, _ := fieldU32(head, l.ProtoSizePT)
	if size > maxProtoSize {
		return nil
	}
	buf := make([]byte, size)
	if !readFull(mem, buf, addr) {
		return nil
	}
	// The struct is read again with the rest: one snapshot of the proto.
	return n.parseProto(addr, buf, want, true)
}

// parseProto checks the GCproto at the start of b and returns it, nil
// when it is not the proto want identifies or does not hold together.
// b is all of the proto when whole, else its struct.
func (n *Namer) parseProto(addr uint64, b []byte, want protoID, whole bool) *proto {
	l := n.l
	f := fields{b: b, ok: true}
	pt := &proto{
		addr: addr,
		mem:  b,
		id: protoID{
			chunkName: f.u64(l.ProtoChunkName),
			sizeBC:    f.u32(l.ProtoSizeBC),
			firstLine: f.u32(l.ProtoFirstLine),
			numLine:   f.u32(l.ProtoNumLine),
		},
		k:       f.u64(l.ProtoK),
		uvInfo:  f.u64(l.ProtoUVInfo),
		varInfo: f.u64(l.ProtoVarInfo),
		sizeKGC: f.u32(l.ProtoSizeKGC),
		sizeUV:  uint32(f.u8(l.ProtoSizeUV)),
		bcOff:   l.ProtoSize,
	}
	size := int64(f.u32(l.ProtoSizePT))
	switch {
	case !f.ok || pt.id != want || int64(len(b)) < l.ProtoSize:
		return nil
	case whole && size != int64(len(b)):
		return nil // changed between the two reads
	case l.ProtoSize+4*int64(pt.id.sizeBC) > size:
		return nil // the bytecode follows the struct, inside the proto
	}
	pt.cost = len(b)
	return pt
}

// remember caches pt, making room when the cache is full.
func (n *Namer) remember(pt *proto) {
	for addr := range n.protos {
		if n.size+pt.cost <= maxCacheBytes {
			break
		}
		n.forget(addr)
	}
	n.protos[pt.addr] = pt
	n.size += pt.cost
}

func (n *Namer) forget(addr uint64) {
	if pt := n.protos[addr]; pt != nil {
		n.size -= pt.cost
		delete(n.protos, addr)
	}
}

// ins is the instruction at bytecode position pos.
func (pt *proto) ins(pos uint32) (uint32, bool) {
	return fieldU32(pt.mem, pt.bcOff+4*int64(pos))
}

// offset is where the size bytes at addr are in pt.mem, when they are
// inside the proto.
func (pt *proto) offset(addr uint64, size int) (int, bool) {
	if addr < pt.addr || size < 0 || size > len(pt.mem) {
		return 0, false
	}
	off := addr - pt.addr
	if off > uint64(len(pt.mem)-size) {
		return 0, false
	}
	return int(off), true
}

// cString is the NUL-terminated string at off in pt.mem.
func (pt *proto) cString(off int) (string, bool) {
	if off < 0 || off >= len(pt.mem) {
		return "", false
	}
	end := bytes.IndexByte(pt.mem[off:], 0)
	if end < 0 {
		return "", false
	}
	return string(pt.mem[off : off+end]), true
}

// slotNamer is lj_debug_slotname and what it calls, for one call.
type slotNamer struct {
	n     *Namer
	mem   io.ReaderAt
	pt    *proto
	steps int
}

// step counts work; false when the call has taken too much.
func (s *slotNamer) step(cost int) bool {
	s.steps += cost
	return s.steps <= maxSteps
}

// slotName is lj_debug_slotname: the name of what slot holds at the
// instruction at pos, from the variable names, or from the instruction
// that last set the slot.
func (s *slotNamer) slotName(pos, slot uint32) (name, what string, ok bool) {
	pt := s.pt
restart:
	for {
		lname, found, ok := s.varName(pos, slot)
		if !ok {
			return "", "", false
		}
		if found {
			return lname, "local", true
		}
		// Back from the instruction before pos, not down to the
		// function header at 0.
		for pos > 1 {
			pos--
			if !s.step(1) {
				return "", "", false
			}
			ins, ok := pt.ins(pos)
			if !ok || int(bcOp(ins)) >= len(opcodes) {
				return "", "", false
			}
			op, ra := bcOp(ins), bcA(ins)
			switch opcodes[op].a {
			case modeBase:
				// Written from a base up (by a call, by KNIL): the
				// value has no name.
				if slot >= ra && (op != opKNIL || slot <= bcD(ins)) {
					return "", "", false
				}
			case modeDst:
				if ra != slot {
					continue
				}
				switch op {
				case opMOV:
					slot = bcD(ins)
					continue restart
				case opGGET:
					name, ok := s.constString(bcD(ins))
					return name, "global", ok
				case opTGETS:
					name, ok := s.constString(bcC(ins))
					if !ok {
						return "", "", false
					}
					// obj:m() is MOV of obj above the callee's two
					// slots (GC64), then TGETS of m.
					if pos > 0 {
						if prev, ok := pt.ins(pos - 1); ok && bcOp(prev) == opMOV &&
							bcA(prev) == ra+2 && bcD(prev) == bcB(ins) {
							return name, "method", true
						}
					}
					return name, "field", true
				case opUGET:
					name, ok := s.upvalueName(bcD(ins))
					return name, "upvalue", ok
				default:
					return "", "", false
				}
			}
		}
		return "", "", false
	}
}

// varName is debug_varname: the name of the local variable in slot at
// bytecode position pc. found is false when no variable is there; ok is
// false when the debug info cannot be read.
func (s *slotNamer) varName(pc, slot uint32) (name string, found, ok bool) {
	pt := s.pt
	if pt.varInfo == 0 {
		return "", false, true // stripped: no names
	}
	p, ok := pt.offset(pt.varInfo, 1)
	if !ok {
		return "", false, false
	}
	b := pt.mem
	var lastPC uint32
	for {
		if !s.step(1) || p >= len(b) {
			return "", false, false
		}
		start := p
		vn := b[p]
		if vn < varNameMax {
			if vn == varNameEnd {
				return "", false, true
			}
		} else {
			end := bytes.IndexByte(b[p+1:], 0)
			if end < 0 || !s.step(end) {
				return "", false, false
			}
			p += 1 + end
		}
		p++
		delta, ok := uleb128(b, &p)
		if !ok {
			return "", false, false
		}
		lastPC += delta
		startPC := lastPC
		if startPC > pc {
			return "", false, true
		}
		length, ok := uleb128(b, &p)
		if !ok {
			return "", false, false
		}
		if pc < startPC+length {
			if slot == 0 {
				if vn < varNameMax {
					return builtinVarNames[vn-1], true, true
				}
				name, ok := pt.cString(start)
				return name, ok, ok
			}
			slot--
		}
	}
}

// upvalueName is lj_debug_uvname: upvalue idx's name, "" when the proto
// has no debug info.
func (s *slotNamer) upvalueName(idx uint32) (string, bool) {
	pt := s.pt
	if idx >= pt.sizeUV {
		return "", false
	}
	if pt.uvInfo == 0 {
		return "", true
	}
	p, ok := pt.offset(pt.uvInfo, 1)
	if !ok {
		return "", false
	}
	// The names are NUL-terminated, one after the other.
	for ; idx > 0; idx-- {
		end := bytes.IndexByte(pt.mem[p:], 0)
		if end < 0 || p+end+1 >= len(pt.mem) {
			return "", false
		}
		p += end + 1
	}
	return pt.cString(p)
}

// constString is the string constant d of the proto (proto_kgc(pt, ~d)),
// as far as C prints it: to its first NUL.
func (s *slotNamer) constString(d uint32) (string, bool) {
	pt := s.pt
	if d >= pt.sizeKGC {
		return "", false
	}
	if name, ok := pt.strs[d]; ok {
		return name, true
	}
	// The collectable constants are GCRefs below k, the first at k-8.
	ref := 8 * (uint64(d) + 1)
	if pt.k < ref {
		return "", false
	}
	off, ok := pt.offset(pt.k-ref, 8)
	if !ok {
		return "", false
	}
	name, ok := s.n.readString(s.mem, binary.LittleEndian.Uint64(pt.mem[off:]))
	if !ok {
		return "", false
	}
	if pt.strs == nil {
		pt.strs = map[uint32]string{}
	}
	pt.strs[d] = name
	pt.cost += len(name)
	s.n.size += len(name)
	return name, true
}

// readString reads the GCstr at addr up to its first NUL, bounded by
// maxNameLen.
func (n *Namer) readString(mem io.ReaderAt, addr uint64) (string, bool) {
	l := n.l
	if l.StrSize <= 0 || l.StrSize > maxNameLen || addr == 0 {
		return "", false
	}
	head := make([]byte, l.StrSize)
	if !readFull(mem, head, addr) {
		return "", false
	}
	size, ok := fieldU32(head, l.StrLen)
	if !ok {
		return "", false
	}
	data := make([]byte, min(size, maxNameLen))
	if !readFull(mem, data, addr+uint64(l.StrSize)) {
		return "", false
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return string(data[:i]), true
	}
	if size > maxNameLen {
		return "", false
	}
	return string(data), true
}

// uleb128 is lj_buf_ruleb128: an unsigned LEB128 number of at most 32
// bits at *p, which it advances.
func uleb128(b []byte, p *int) (uint32, bool) {
	var v uint32
	for i := 0; i < 5; i++ {
		if *p >= len(b) {
			return 0, false
		}
		c := b[*p]
		*p++
		v |= uint32(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, true
		}
	}
	return 0, false
}

// readFull reads len(b) bytes at addr; false when not all of them can
// be read.
func readFull(mem io.ReaderAt, b []byte, addr uint64) bool {
	if addr > math.MaxInt64-uint64(len(b)) {
		return false
	}
	n, _ := mem.ReadAt(b, int64(addr))
	return n == len(b)
}

// fields reads little-endian members at Layout offsets, bounds-checked;
// ok turns false at the first one out of b.
type fields struct {
	b  []byte
	ok bool
}

func (f *fields) at(off, size int64) []byte {
	if off < 0 || off > int64(len(f.b))-size {
		f.ok = false
		return nil
	}
	return f.b[off : off+size]
}

func (f *fields) u8(off int64) uint8 {
	if b := f.at(off, 1); b != nil {
		return b[0]
	}
	return 0
}

func (f *fields) u32(off int64) uint32 {
	if b := f.at(off, 4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (f *fields) u64(off int64) uint64 {
	if b := f.at(off, 8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func fieldU32(b []byte, off int64) (uint32, bool) {
	f := fields{b: b, ok: true}
	v := f.u32(off)
	return v, f.ok
}

// Instruction fields (lj_bc.h): 32 bits, op in the low byte, then A, then
// C and B, or D across both.
func bcOp(ins uint32) uint32 { return ins & 0xff }
func bcA(ins uint32) uint32  { return ins >> 8 & 0xff }
func bcB(ins uint32) uint32  { return ins >> 24 }
func bcC(ins uint32) uint32  { return ins >> 16 & 0xff }
func bcD(ins uint32) uint32  { return ins >> 16 }
