package lua

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// namerLayout is the layout of OpenResty's LuaJIT 2.1 GC64 on amd64, as
// its DWARF gives it: the members a Namer reads.
func namerLayout() *Layout {
	return &Layout{
		FuncPC:    32,
		ProtoSize: 104, ProtoSizeBC: 12, ProtoK: 32, ProtoSizeKGC: 48, ProtoSizePT: 56, ProtoSizeUV: 60,
		ProtoChunkName: 64, ProtoFirstLine: 72, ProtoNumLine: 76, ProtoLineInfo: 80, ProtoUVInfo: 88, ProtoVarInfo: 96,
		StrLen: 20, StrSize: 24,
	}
}

// fakeMem is a process's memory: regions of bytes at addresses. A read
// that runs off a region returns what it got and io.EOF, as a read of
// /proc/PID/mem that reaches an unmapped page.
type fakeMem struct {
	regions map[uint64][]byte
	reads   int
}

func newFakeMem() *fakeMem { return &fakeMem{regions: map[uint64][]byte{}} }

func (m *fakeMem) ReadAt(p []byte, off int64) (int, error) {
	m.reads++
	for addr, b := range m.regions {
		if uint64(off) >= addr && uint64(off)-addr < uint64(len(b)) {
			n := copy(p, b[uint64(off)-addr:])
			if n < len(p) {
				return n, io.EOF
			}
			return n, nil
		}
	}
	return 0, io.EOF
}

// opcodeNum is the number of the opcode named name.
func opcodeNum(name string) uint32 {
	for i, o := range opcodes {
		if o.name == name {
			return uint32(i)
		}
	}
	panic("no opcode " + name)
}

func insAD(name string, a, d uint32) uint32 { return opcodeNum(name) | a<<8 | d<<16 }
func insABC(name string, a, b, c uint32) uint32 {
	return opcodeNum(name) | a<<8 | c<<16 | b<<24
}

// testVar is a local variable of a testProto: a name, or a VARNAME_*
// byte (1 to 6) for the parser's hidden ones, live in [start, end).
type testVar struct {
	name       string
	builtin    byte
	start, end uint32
}

// testProto lays a GCproto out as lj_parse.c does: the struct, the
// bytecode, the GCRefs of the collectable constants (k points after
// them), then the upvalue and variable names.
type testProto struct {
	addr      uint64
	bc        []uint32 // bc[0] is the function header
	kgc       []uint64 // GCstr addresses: constant d is kgc[d]
	uvNames   []string // nil: no debug info
	vars      []testVar
	sizeUV    int
	chunkName uint64
	firstLine uint32
	numLine   uint32
	// Tampering, for the tests of what is refused.
	sizePT             int // when not 0
	k, uvInfo, varInfo *uint64
}

func newTestProto(bc ...uint32) *testProto {
	return &testProto{addr: 0x10000, bc: append([]uint32{insAD("FUNCF", 2, 0)}, bc...),
		chunkName: 0x9000, firstLine: 10, numLine: 5}
}

func appendULEB128(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// bytes is the proto's memory.
func (p *testProto) bytes() []byte {
	const size = 104
	b := make([]byte, size, 4096)
	for _, ins := range p.bc {
		b = binary.LittleEndian.AppendUint32(b, ins)
	}
	for d := len(p.kgc) - 1; d >= 0; d-- {
		b = binary.LittleEndian.AppendUint64(b, p.kgc[d])
	}
	k := p.addr + uint64(len(b))
	var uvInfo, varInfo uint64
	if p.uvNames != nil || p.vars != nil {
		uvInfo = p.addr + uint64(len(b))
		for _, n := range p.uvNames {
			b = append(append(b, n...), 0)
		}
		varInfo = p.addr + uint64(len(b))
		last := uint32(0)
		for _, v := range p.vars {
			if v.builtin != 0 {
				b = append(b, v.builtin)
			} else {
				b = append(append(b, v.name...), 0)
			}
			b = appendULEB128(appendULEB128(b, v.start-last), v.end-v.start)
			last = v.start
		}
		b = append(b, 0)
	}
	le := binary.LittleEndian
	le.PutUint32(b[12:], uint32(len(p.bc)))
	le.PutUint64(b[32:], k)
	le.PutUint32(b[48:], uint32(len(p.kgc)))
	le.PutUint32(b[56:], uint32(len(b)))
	if p.sizePT != 0 {
		le.PutUint32(b[56:], uint32(p.sizePT))
	}
	b[60] = byte(max(p.sizeUV, len(p.uvNames)))
	le.PutUint64(b[64:], p.chunkName)
	le.PutUint32(b[72:], p.firstLine)
	le.PutUint32(b[76:], p.numLine)
	for off, v := range map[int]*uint64{32: p.k, 88: p.uvInfo, 96: p.varInfo} {
		if v != nil {
			le.PutUint64(b[off:], *v)
		}
	}
	if p.uvInfo == nil {
		le.PutUint64(b[88:], uvInfo)
	}
	if p.varInfo == nil {
		le.PutUint64(b[96:], varInfo)
	}
	return b
}

// callAt is the CallSite of the instruction at pos, as the walk copies
// it.
func (p *testProto) callAt(pos int) *CallSite {
	return &CallSite{
		Proto:     p.addr,
		ReturnPC:  p.addr + 104 + 4*uint64(pos+1),
		ChunkName: p.chunkName,
		SizeBC:    uint32(len(p.bc)),
		FirstLine: p.firstLine,
		NumLine:   p.numLine,
	}
}

// nameCall names the function cs called, as Name names a frame.
func nameCall(n *Namer, mem io.ReaderAt, cs *CallSite) (what, name string) {
	st := Stack{Status: StatusOK, Frames: []Frame{{Kind: KindLua}, {Kind: KindLua, Caller: cs}}}
	n.Name(mem, &st)
	if st.Frames[0].NameWhat != "" {
		panic("named a frame without a caller")
	}
	return st.Frames[1].NameWhat, st.Frames[1].Name
}

// The strings the tests' constants point at: GCstrs in one region at
// strBase (FuzzName's too).
const (
	strBase  = 0x20000
	strPrint = strBase + 0x0
	strT     = strBase + 0x40
	strF     = strBase + 0x80
	strM     = strBase + 0xc0
	strObj   = strBase + 0x100
	strEmpty = strBase + 0x140
	strLong  = strBase + 0x180
	strNUL   = strBase + 0x300
)

// testStrings is the region at strBase.
func testStrings() []byte {
	b := make([]byte, 0x300+24+3+2*maxNameLen+1)
	put := func(addr uint64, s string) {
		g := b[addr-strBase:]
		binary.LittleEndian.PutUint32(g[20:], uint32(len(s)))
		copy(g[24:], s)
	}
	put(strPrint, "print")
	put(strT, "t")
	put(strF, "f")
	put(strM, "m")
	put(strObj, "obj")
	put(strEmpty, "")
	put(strLong, strings.Repeat("x", maxNameLen+1))
	put(strNUL, "a\x00b"+strings.Repeat("y", 2*maxNameLen))
	return b
}

// testMem maps the test strings and the protos.
func testMem(protos ...*testProto) *fakeMem {
	m := newFakeMem()
	m.regions[strBase] = testStrings()
	for _, p := range protos {
		m.regions[p.addr] = p.bytes()
	}
	return m
}

// nameCheck is a proto, the position of a call in it, and the name
// LuaJIT gives the function it calls.
type nameCheck struct {
	name       string
	proto      *testProto
	pos        int // the call's position; 0: the last instruction
	what, want string
}

// callPos is the position of the check's call.
func (c nameCheck) callPos() int {
	if c.pos == 0 {
		return len(c.proto.bc) - 1
	}
	return c.pos
}

// memory is the proto's memory, cut to its sizept when that is less.
func (c nameCheck) memory() []byte {
	b := c.proto.bytes()
	if c.proto.sizePT != 0 && c.proto.sizePT < len(b) && c.proto.sizePT >= 104 {
		b = b[:c.proto.sizePT]
	}
	return b
}

// nameChecks are the cases of TestName, and FuzzName's seeds.
func nameChecks() []nameCheck {
	u64 := func(v uint64) *uint64 { return &v }
	return []nameCheck{
		{name: "local from varinfo", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 1), insABC("CALL", 1, 1, 1))
			p.vars = []testVar{{name: "a", start: 1, end: 3}, {name: "fn", start: 1, end: 3}}
			return p
		}(), what: "local", want: "fn"},
		{name: "variable out of range", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 1), insABC("CALL", 1, 1, 1))
			p.vars = []testVar{{name: "a", start: 1, end: 3}, {name: "fn", start: 1, end: 2}}
			return p
		}()},
		{name: "variable starts after the call", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 1), insABC("CALL", 0, 1, 1))
			p.vars = []testVar{{name: "late", start: 3, end: 4}}
			return p
		}()},
		{name: "MOV chain", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insAD("MOV", 1, 0), insAD("MOV", 2, 1), insABC("CALL", 2, 1, 1))
			p.kgc = []uint64{strPrint}
			p.vars = []testVar{{name: "g", start: 2, end: 5}, {name: "h", start: 4, end: 5}}
			return p
		}(), what: "local", want: "g"},
		{name: "MOV chain to a global", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insAD("MOV", 1, 0), insABC("CALL", 1, 1, 1))
			p.kgc = []uint64{strPrint}
			p.uvNames, p.vars = []string{}, []testVar{}
			return p
		}(), what: "global", want: "print"},
		{name: "global", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 1), insAD("GGET", 1, 1), insABC("CALL", 1, 1, 1))
			p.kgc = []uint64{strT, strPrint}
			return p
		}(), what: "global", want: "print"},
		{name: "field", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insABC("TGETS", 0, 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strF, strT}
			return p
		}(), what: "field", want: "f"},
		{name: "method", proto: func() *testProto {
			// obj:m(): self above the callee's two slots, then obj.m.
			p := newTestProto(insAD("GGET", 0, 1), insAD("MOV", 3, 0), insABC("TGETS", 1, 0, 0), insABC("CALL", 1, 1, 2))
			p.kgc = []uint64{strM, strObj}
			return p
		}(), what: "method", want: "m"},
		{name: "method-like MOV one slot up is a field", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insAD("MOV", 2, 0), insABC("TGETS", 1, 0, 0), insABC("CALL", 1, 1, 2))
			p.kgc = []uint64{strM, strObj}
			return p
		}(), what: "field", want: "m"},
		{name: "method-like MOV of another table is a field", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insAD("MOV", 3, 2), insABC("TGETS", 1, 0, 0), insABC("CALL", 1, 1, 2))
			p.kgc = []uint64{strM, strObj}
			return p
		}(), what: "field", want: "m"},
		{name: "upvalue", proto: func() *testProto {
			p := newTestProto(insAD("UGET", 0, 1), insABC("CALL", 0, 1, 1))
			p.uvNames = []string{"first", "up"}
			return p
		}(), what: "upvalue", want: "up"},
		{name: "upvalue without debug info", proto: func() *testProto {
			p := newTestProto(insAD("UGET", 0, 1), insABC("CALL", 0, 1, 1))
			p.sizeUV = 2
			return p
		}(), what: "upvalue", want: ""},
		{name: "upvalue index out of range", proto: func() *testProto {
			p := newTestProto(insAD("UGET", 0, 2), insABC("CALL", 0, 1, 1))
			p.uvNames = []string{"first", "up"}
			return p
		}()},
		{name: "KNIL over the slot", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 2, 0), insAD("KNIL", 0, 3), insABC("CALL", 2, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "KNIL below the slot", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 2, 0), insAD("KNIL", 0, 1), insABC("CALL", 2, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}(), what: "global", want: "print"},
		{name: "call result", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 1, 0), insABC("CALL", 0, 2, 1), insABC("CALL", 1, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "call below the slot", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 1, 0), insABC("CALL", 2, 2, 1), insABC("CALL", 1, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}(), what: "global", want: "print"},
		{name: "other instruction sets the slot", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("TGETV", 0, 0, 1), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "nothing sets the slot", proto: newTestProto(insAD("KSHORT", 1, 1), insABC("CALL", 0, 1, 1))},
		{name: "the header is not scanned", proto: func() *testProto {
			p := newTestProto(insABC("CALL", 2, 1, 1))
			p.bc[0] = insAD("GGET", 2, 0)
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "ITERC names the generator", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insAD("KNIL", 1, 2), insAD("JMP", 3, 0x8001), insABC("ITERC", 3, 2, 3), insAD("ITERL", 3, 0x7ffe))
			p.kgc = []uint64{strPrint}
			p.vars = []testVar{{builtin: 4, start: 3, end: 6}, {builtin: 5, start: 3, end: 6}, {builtin: 6, start: 3, end: 6}}
			return p
		}(), pos: 4, what: "local", want: "(for generator)"},
		{name: "ITERN is an ITERC at a call", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insAD("KNIL", 1, 2), insAD("ISNEXT", 3, 0x8001), insABC("ITERN", 3, 2, 3), insAD("ITERL", 3, 0x7ffe))
			p.kgc = []uint64{strPrint}
			p.vars = []testVar{{builtin: 4, start: 3, end: 6}, {builtin: 5, start: 3, end: 6}, {builtin: 6, start: 3, end: 6}}
			return p
		}(), pos: 4, what: "local", want: "(for generator)"},
		{name: "ITERC without names finds the generator's GGET", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insAD("KNIL", 1, 2), insAD("JMP", 3, 0x8001), insABC("ITERC", 3, 2, 3))
			p.kgc = []uint64{strPrint}
			return p
		}(), what: "global", want: "print"},
		{name: "ITERC below slot 3", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("ITERC", 1, 2, 3))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "builtin variable names", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 1), insAD("KSHORT", 1, 1), insAD("KSHORT", 2, 1), insABC("CALL", 2, 1, 1))
			p.vars = []testVar{{builtin: 1, start: 1, end: 5}, {builtin: 2, start: 1, end: 5}, {builtin: 3, start: 1, end: 5}}
			return p
		}(), what: "local", want: "(for step)"},
		{name: "metamethod __index", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insABC("TGETS", 1, 0, 0))
			p.kgc = []uint64{strF, strT}
			return p
		}(), what: "metamethod", want: "__index"},
		{name: "metamethod __concat", proto: newTestProto(insABC("CAT", 0, 0, 1)), what: "metamethod", want: "__concat"},
		{name: "metamethod __lt", proto: newTestProto(insAD("ISGE", 0, 1), insAD("JMP", 2, 0x8001)), pos: 1, what: "metamethod", want: "__lt"},
		{name: "metamethod __gc", proto: newTestProto(insAD("TNEW", 0, 0)), what: "metamethod", want: "__gc"},
		{name: "no metamethod", proto: newTestProto(insAD("MOV", 0, 1))},
		{name: "not an opcode", proto: newTestProto(uint32(len(opcodes)))},
		{name: "not an opcode in the scan", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), uint32(len(opcodes))|1<<8, insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "a field name up to its NUL", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insABC("TGETS", 0, 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strNUL, strT}
			return p
		}(), what: "field", want: "a"},
		{name: "an empty field name", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insABC("TGETS", 0, 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strEmpty, strT}
			return p
		}(), what: "field", want: ""},
		{name: "a name too long", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strLong}
			return p
		}()},
		{name: "an unmapped string", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{0x7000000}
			return p
		}()},
		{name: "a constant past sizekgc", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 1), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			return p
		}()},
		{name: "k outside the proto", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			p.k = u64(0x10000 + 4096)
			return p
		}()},
		{name: "k below its constants", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			p.k = u64(4)
			return p
		}()},
		{name: "varinfo outside the proto", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			p.vars = []testVar{{name: "a", start: 1, end: 2}}
			p.varInfo = u64(0x50000)
			return p
		}()},
		{name: "varinfo without its end", proto: func() *testProto {
			p := newTestProto(insAD("KSHORT", 0, 0), insABC("CALL", 1, 1, 1))
			p.vars = []testVar{{name: "a", start: 1, end: 3}}
			p.uvNames = []string{}
			b := p.bytes()
			p.sizePT = len(b) - 1 // cut the terminator
			return p
		}()},
		{name: "uvinfo outside the proto", proto: func() *testProto {
			p := newTestProto(insAD("UGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.uvNames = []string{"up"}
			p.uvInfo = u64(0x10000 - 1)
			return p
		}()},
		{name: "sizept too large", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			p.sizePT = maxProtoSize + 1
			return p
		}()},
		{name: "sizept smaller than the bytecode", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.kgc = []uint64{strPrint}
			p.sizePT = 104 + 4*3 - 1
			return p
		}()},
		{name: "sizept smaller than the struct", proto: func() *testProto {
			p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
			p.sizePT = 50
			return p
		}()},
	}
}

func TestName(t *testing.T) {
	for _, c := range nameChecks() {
		t.Run(c.name, func(t *testing.T) {
			mem := testMem()
			mem.regions[c.proto.addr] = c.memory()
			what, name := nameCall(NewNamer(namerLayout()), mem, c.proto.callAt(c.callPos()))
			if what != c.what || name != c.want {
				t.Errorf("named %q %q, want %q %q", what, name, c.what, c.want)
			}
		})
	}
}

// TestNameRefuses: what the walk copied must be what is read, the call
// must be inside the bytecode, and the proto must be read whole.
func TestNameRefuses(t *testing.T) {
	p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
	p.kgc = []uint64{strPrint}
	good := p.callAt(2)
	for _, c := range []struct {
		name string
		edit func(cs *CallSite)
		mem  func(m *fakeMem)
	}{
		{name: "other chunk name", edit: func(cs *CallSite) { cs.ChunkName++ }},
		{name: "other sizebc", edit: func(cs *CallSite) { cs.SizeBC++ }},
		{name: "other firstline", edit: func(cs *CallSite) { cs.FirstLine++ }},
		{name: "other numline", edit: func(cs *CallSite) { cs.NumLine++ }},
		{name: "return PC misaligned", edit: func(cs *CallSite) { cs.ReturnPC-- }},
		{name: "return PC at the bytecode", edit: func(cs *CallSite) { cs.ReturnPC = p.addr + 104 }},
		{name: "return PC before the bytecode", edit: func(cs *CallSite) { cs.ReturnPC = p.addr }},
		{name: "return PC past the bytecode", edit: func(cs *CallSite) { cs.ReturnPC += 4 }},
		{name: "return PC far off", edit: func(cs *CallSite) { cs.ReturnPC += 1 << 62 }},
		{name: "proto address past int64", edit: func(cs *CallSite) { cs.Proto, cs.ReturnPC = 1<<63, 1<<63+104+12 }},
		{name: "proto address off", edit: func(cs *CallSite) { cs.Proto += 8 }},
		{name: "proto unmapped", edit: func(cs *CallSite) { cs.Proto += 1 << 30 }},
		{name: "proto cut short", mem: func(m *fakeMem) { m.regions[p.addr] = m.regions[p.addr][:len(m.regions[p.addr])-1] }},
		{name: "struct cut short", mem: func(m *fakeMem) { m.regions[p.addr] = m.regions[p.addr][:100] }},
		{name: "string header cut short", mem: func(m *fakeMem) { m.regions[strBase] = m.regions[strBase][:strPrint-strBase+22] }},
		{name: "string cut short", mem: func(m *fakeMem) { m.regions[strBase] = m.regions[strBase][:strPrint-strBase+24+4] }},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := testMem(p)
			if c.mem != nil {
				c.mem(mem)
			}
			cs := *good
			if c.edit != nil {
				c.edit(&cs)
			}
			if what, name := nameCall(NewNamer(namerLayout()), mem, &cs); what != "" || name != "" {
				t.Errorf("named %q %q, want no name", what, name)
			}
		})
	}
	// And unedited, it names.
	if what, name := nameCall(NewNamer(namerLayout()), testMem(p), good); what != "global" || name != "print" {
		t.Errorf("named %q %q, want global print", what, name)
	}
}

// TestNameCache: a proto is read once; one freed and reused since is read
// again, and the call the walk saw in the old one gets no name.
func TestNameCache(t *testing.T) {
	old := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
	old.kgc = []uint64{strPrint}
	mem := testMem(old)
	n := NewNamer(namerLayout())
	for i := range 3 {
		if what, name := nameCall(n, mem, old.callAt(2)); what != "global" || name != "print" {
			t.Fatalf("call %d: named %q %q, want global print", i, what, name)
		}
	}
	if mem.reads != 4 { // the struct, the proto, the string's header and bytes
		t.Errorf("%d reads for three calls in one proto, want 4", mem.reads)
	}

	reused := newTestProto(insAD("GGET", 1, 0), insAD("MOV", 0, 1), insABC("CALL", 0, 1, 1))
	reused.kgc = []uint64{strT}
	reused.firstLine = 20
	mem.regions[reused.addr] = reused.bytes()
	if what, name := nameCall(n, mem, reused.callAt(3)); what != "global" || name != "t" {
		t.Errorf("reused proto: named %q %q, want global t", what, name)
	}
	if what, name := nameCall(n, mem, old.callAt(2)); what != "" {
		t.Errorf("freed proto: named %q %q, want no name", what, name)
	}
	if len(n.protos) != 0 {
		t.Errorf("%d protos cached after the last read failed to match, want 0", len(n.protos))
	}
}

// TestNameCacheBound: the cache stays under maxCacheBytes.
func TestNameCacheBound(t *testing.T) {
	mem := testMem()
	n := NewNamer(namerLayout())
	const count = 2 * maxCacheBytes / (256 << 10)
	for i := range count {
		p := newTestProto(insAD("GGET", 0, 0), insABC("CALL", 0, 1, 1))
		p.addr = 0x1000000 + uint64(i)<<20
		p.kgc = []uint64{strPrint}
		b := p.bytes()
		b = append(b, make([]byte, 256<<10-len(b))...)
		binary.LittleEndian.PutUint32(b[56:], uint32(len(b)))
		mem.regions[p.addr] = b
		if what, name := nameCall(n, mem, p.callAt(2)); what != "global" || name != "print" {
			t.Fatalf("proto %d: named %q %q, want global print", i, what, name)
		}
		if n.size > maxCacheBytes {
			t.Fatalf("proto %d: cache holds %d bytes, more than %d", i, n.size, maxCacheBytes)
		}
		delete(mem.regions, p.addr)
	}
	held := 0
	for _, p := range n.protos {
		held += p.cost
	}
	if held != n.size || len(n.protos) == 0 || len(n.protos) == count {
		t.Errorf("cache: %d protos, size %d, counted %d", len(n.protos), n.size, held)
	}
}

// TestNameBudget: crafted bytecode and debug info that would make the
// scan quadratic end in bounded time, unnamed.
func TestNameBudget(t *testing.T) {
	const ins = 100000
	bc := make([]uint32, 0, ins)
	for range ins - 1 {
		bc = append(bc, insAD("MOV", 0, 0)) // a restart at every one
	}
	bc = append(bc, insABC("CALL", 0, 1, 1))
	p := newTestProto(bc...)
	for range ins {
		p.vars = append(p.vars, testVar{name: "v", start: 0, end: 0}) // never live
	}
	b := p.bytes()
	if len(b) > maxProtoSize {
		t.Fatalf("the proto has %d bytes, more than the %d a Namer reads", len(b), maxProtoSize)
	}
	mem := newFakeMem()
	mem.regions[p.addr] = b
	start := time.Now()
	what, name := nameCall(NewNamer(namerLayout()), mem, p.callAt(ins))
	if what != "" {
		t.Errorf("named %q %q, want no name", what, name)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestNameNil: nothing to name with, nothing named, no panic.
func TestNameNil(t *testing.T) {
	st := Stack{Frames: []Frame{{Caller: &CallSite{}}}}
	var n *Namer
	n.Name(newFakeMem(), &st)
	NewNamer(nil).Name(newFakeMem(), &st)
	NewNamer(namerLayout()).Name(nil, &st)
	NewNamer(namerLayout()).Name(newFakeMem(), nil)
	NewNamer(&Layout{ProtoSize: 104, ProtoSizePT: 1000}).Name(newFakeMem(), &st)
	if st.Frames[0].NameWhat != "" {
		t.Errorf("named %+v", st.Frames[0])
	}
}

// luajitSource is the LuaJIT source tree build-openresty.sh built:
// $NGXPROBE_CACHE/openresty-deb-<hash>/build/luajit2/src. In CI the
// build is made (or found) with nginxtest; elsewhere a missing one skips.
func luajitSource(t *testing.T) string {
	t.Helper()
	if testenv.InCI() {
		return filepath.Join(nginxtest.BuildOpenResty(t).Dir, "build", "luajit2", "src")
	}
	cache := os.Getenv("NGXPROBE_CACHE")
	if cache == "" {
		cache = "/var/cache/ngxprobe"
	}
	builds, _ := filepath.Glob(filepath.Join(cache, "openresty-deb-*", ".complete"))
	var newest string
	var newestTime time.Time
	for _, done := range builds {
		src := filepath.Join(filepath.Dir(done), "build", "luajit2", "src")
		if st, err := os.Stat(filepath.Join(src, "lj_bc.h")); err == nil && st.ModTime().After(newestTime) {
			newest, newestTime = src, st.ModTime()
		}
	}
	if newest == "" {
		t.Skipf("no LuaJIT build in %s/openresty-deb-*/build/luajit2/src (internal/nginxtest/build-openresty.sh makes it)", cache)
	}
	return newest
}

// macroBody is the text of the #define of name in the C file text, its
// continuation lines joined.
func macroBody(t *testing.T, text, name string) string {
	t.Helper()
	i := strings.Index(text, "#define "+name+"(")
	if i < 0 {
		t.Fatalf("no #define %s", name)
	}
	var body strings.Builder
	for _, line := range strings.Split(text[i:], "\n") {
		body.WriteString(strings.TrimSuffix(line, "\\"))
		body.WriteString("\n")
		if !strings.HasSuffix(line, "\\") {
			break
		}
	}
	return body.String()
}

// TestOpcodesMatchLuaJIT re-derives the tables of bytecode.go and
// names.go from the sources of the LuaJIT that was built: lj_bc.h's
// BCDEF and BCMode, lj_obj.h's MMDEF (and lj_meta.c's MMNAME) and
// lj_debug.h's VARNAMEDEF.
func TestOpcodesMatchLuaJIT(t *testing.T) {
	src := luajitSource(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	bcH, objH, debugH := read("lj_bc.h"), read("lj_obj.h"), read("lj_debug.h")

	// Operand modes, in the order of the BCMode enum.
	enum := regexp.MustCompile(`typedef enum \{([^}]*)\} BCMode;`).FindStringSubmatch(bcH)
	if enum == nil {
		t.Fatal("lj_bc.h: no BCMode enum")
	}
	modes := map[string]bcMode{"___": modeNone}
	for i, m := range regexp.MustCompile(`BCM(\w+)`).FindAllStringSubmatch(regexp.MustCompile(`/\*.*?\*/`).ReplaceAllString(enum[1], ""), -1) {
		if m[1] == "_max" {
			continue
		}
		modes[m[1]] = bcMode(i)
	}
	if len(modes) != int(modeCdata)+2 || modes["none"] != modeNone || modes["cdata"] != modeCdata {
		t.Fatalf("lj_bc.h BCMode: %v, want modeNone..modeCdata in order", modes)
	}

	// The metamethods an opcode can name.
	mms := map[string]bool{"___": true}
	for _, m := range regexp.MustCompile(`\b_\((\w+)\)`).FindAllStringSubmatch(macroBody(t, objH, "MMDEF"), -1) {
		mms[m[1]] = true
	}
	for _, want := range []string{"index", "call", "concat", "gc"} {
		if !mms[want] {
			t.Fatalf("lj_obj.h MMDEF has no %s: %v", want, mms)
		}
	}
	// The names the VM interns, which lj_debug_funcname gives.
	if !regexp.MustCompile(`#define MMNAME\(name\)\s+"__" #name`).MatchString(read("lj_meta.c")) {
		t.Error(`lj_meta.c: MMNAME is not "__" #name: names.go's metamethod names are "__" + mm`)
	}

	defs := regexp.MustCompile(`\b_\((\w+),\s*(\w+),\s*(\w+),\s*(\w+),\s*(\w+)\)`).FindAllStringSubmatch(macroBody(t, bcH, "BCDEF"), -1)
	if len(defs) != len(opcodes) {
		t.Errorf("lj_bc.h BCDEF has %d opcodes, bytecode.go %d", len(defs), len(opcodes))
	}
	for i, d := range defs[:min(len(defs), len(opcodes))] {
		mode := func(s string) bcMode {
			m, ok := modes[s]
			if !ok {
				t.Fatalf("lj_bc.h BCDEF %s: no mode %s", d[1], s)
			}
			return m
		}
		if !mms[d[5]] {
			t.Errorf("lj_bc.h BCDEF %s: metamethod %s is not in lj_obj.h MMDEF", d[1], d[5])
		}
		mm := strings.TrimPrefix(d[5], "___")
		want := opcode{name: d[1], a: mode(d[2]), b: mode(d[3]), cd: mode(d[4]), mm: mm}
		if opcodes[i] != want {
			t.Errorf("opcode %d: bytecode.go %+v, lj_bc.h %+v", i, opcodes[i], want)
		}
	}
	for num, name := range map[int]string{opMOV: "MOV", opKNIL: "KNIL", opUGET: "UGET", opGGET: "GGET", opTGETS: "TGETS", opITERC: "ITERC", opITERN: "ITERN"} {
		if num >= len(opcodes) || opcodes[num].name != name {
			t.Errorf("op%s is %d, which is not %s", name, num, name)
		}
	}

	var vars []string
	for _, m := range regexp.MustCompile(`_\((\w+),\s*"([^"]*)"\)`).FindAllStringSubmatch(macroBody(t, debugH, "VARNAMEDEF"), -1) {
		vars = append(vars, m[2])
	}
	if !slices.Equal(vars, builtinVarNames[:]) {
		t.Errorf("lj_debug.h VARNAMEDEF: %q, names.go %q", vars, builtinVarNames)
	}
}

// namesScript calls functions every way a name can come from, one call
// a line, and records what debug.getinfo (which debug.traceback() uses)
// names each: the caller's line, namewhat and name. It prints the
// functions that make the calls, then its records, then waits for its
// stdin to close, for the test to read its memory.
var namesScript = `jit.off()
local out, fns = {}, {}
local function rec()
	local n = debug.getinfo(2, "n")
	local c = debug.getinfo(3, "l")
	out[#out + 1] = string.format("rec\t%d\t%s\t%s", c.currentline, n.namewhat, n.name or "")
end
local function X() rec() end
local function ret(...) return X end
local t = { f = X, ["a b"] = X, ["a\0b"] = X, [1] = X, a = { b = { c = X } } }
t["LONG"] = X
function t:m() rec() end
t.sub = t
G1 = X
M = t
local mt = {
	__index = function() rec() end, __newindex = function() rec() end,
	__add = function() rec() end, __concat = function() rec() end,
	__eq = function() rec() return true end, __lt = function() rec() return true end,
	__le = function() rec() return true end, __unm = function() rec() end,
	__call = function() rec() end,
}
local o1, o2 = setmetatable({}, mt), setmetatable({}, mt)
local function main()
	local l = X
	l() -- local l
	G1() -- global G1
	t.f() -- field f
	t.a.b.c() -- field c
	t:m() -- method m
	t.sub:m() -- method m
	M.f() -- field f
	t["a b"]() -- field "a b"
	t["a\0b"]() -- field "a": C prints to the NUL
	t["LONG"]() -- field LONG: longer than a Namer reads
	t[1]() -- no name
	ret(
	)() -- no name: a call's result
	local up = X
	local function inner()
		up() -- upvalue up
	end
	fns[#fns + 1] = inner
	inner()
	for _ in X do break end -- local (for generator)
	o1() -- upvalue o1, through __call
	local _ = o1.missing -- metamethod __index
	o1.k = 1 -- metamethod __newindex
	_ = o1 + 1 -- metamethod __add
	_ = o1 .. "x" -- metamethod __concat
	_ = o1 == o2 -- metamethod __eq
	_ = o1 < o2 -- metamethod __lt
	_ = o1 <= o2 -- metamethod __le
	_ = -o1 -- metamethod __unm
	local function va(...) rec() end
	va(1, 2) -- local va, a vararg function
	local x = X; local y = x; y() -- local y
	local z = { X }
	z = z[1]; z() -- local z
end
fns[#fns + 1] = main
main()
for _, f in ipairs(fns) do print("fn", tostring(f)) end
for _, r in ipairs(out) do print(r) end
print("ready")
io.stdout:flush()
io.read()
`

// luaRecord is what debug.getinfo named at a line of namesScript.
type luaRecord struct {
	line       int
	what, name string
}

// runNamesScript runs namesScript with LuaJIT's luajit and returns the
// process (waiting on its stdin), its functions and its records.
func runNamesScript(t *testing.T) (pid int, fns []uint64, recs []luaRecord) {
	t.Helper()
	bin := filepath.Join(luajitSource(t), "luajit")
	if _, err := os.Stat(bin); err != nil {
		testenv.SkipOrFail(t, "no luajit beside the LuaJIT headers: %v", err)
	}
	script := filepath.Join(t.TempDir(), "names.lua")
	long := strings.Repeat("k", maxNameLen+1)
	if err := os.WriteFile(script, []byte(strings.ReplaceAll(namesScript, "LONG", long)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("luajit: %v", err)
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		switch {
		case f[0] == "ready":
			return cmd.Process.Pid, fns, recs
		case f[0] == "fn" && len(f) == 2:
			addr, err := strconv.ParseUint(strings.TrimPrefix(f[1], "function: 0x"), 16, 64)
			if err != nil {
				t.Fatalf("luajit printed %q", sc.Text())
			}
			fns = append(fns, addr)
		case f[0] == "rec" && len(f) == 4:
			line, _ := strconv.Atoi(f[1])
			recs = append(recs, luaRecord{line: line, what: f[2], name: f[3]})
		default:
			t.Fatalf("luajit printed %q", sc.Text())
		}
	}
	t.Fatalf("luajit ended before it was ready: %v", sc.Err())
	return 0, nil, nil
}

// callSites are the instructions of the function at fn that may call
// Lua code, with their lines, read from the process's memory: the
// CallSites the walk would copy.
func callSites(t *testing.T, mem io.ReaderAt, l *Layout, fn uint64) map[int][]*CallSite {
	t.Helper()
	read := func(addr uint64, n int) []byte {
		b := make([]byte, n)
		if !readFull(mem, b, addr) {
			t.Fatalf("read %d bytes at %#x", n, addr)
		}
		return b
	}
	le := binary.LittleEndian
	pc := le.Uint64(read(fn+uint64(l.FuncPC), 8))
	pt := pc - uint64(l.ProtoSize)
	head := read(pt, int(l.ProtoSize))
	sizebc := le.Uint32(head[l.ProtoSizeBC:])
	first, numline := le.Uint32(head[l.ProtoFirstLine:]), le.Uint32(head[l.ProtoNumLine:])
	lineinfo := le.Uint64(head[l.ProtoLineInfo:])
	if numline >= 256 {
		t.Fatalf("function at %#x spans %d lines: the test reads 1-byte line info", fn, numline)
	}
	lines := read(lineinfo, int(sizebc)-1)
	code := read(pc, 4*int(sizebc))
	sites := map[int][]*CallSite{}
	for pos := 1; pos < int(sizebc); pos++ {
		op := le.Uint32(code[4*pos:]) & 0xff
		if opcodes[op].mm == "" {
			continue
		}
		line := int(first) + int(lines[pos-1])
		sites[line] = append(sites[line], &CallSite{
			Proto: pt, ReturnPC: pc + 4*uint64(pos+1), ChunkName: le.Uint64(head[l.ProtoChunkName:]),
			SizeBC: sizebc, FirstLine: first, NumLine: numline,
		})
	}
	return sites
}

// TestNamesMatchLuaJIT runs namesScript in LuaJIT's own luajit and names
// every call it made from the process's memory, as the walk's frames
// would be named: each must be what debug.getinfo said.
func TestNamesMatchLuaJIT(t *testing.T) {
	pid, fns, recs := runNamesScript(t)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		testenv.SkipOrFail(t, "can't read luajit's memory: %v", err)
	}
	defer mem.Close()
	l := namerLayout()
	sites := map[int][]*CallSite{}
	for _, fn := range fns {
		for line, s := range callSites(t, mem, l, fn) {
			sites[line] = append(sites[line], s...)
		}
	}
	if len(recs) < 25 {
		t.Fatalf("luajit recorded %d calls, want all of namesScript's: %v", len(recs), recs)
	}
	n := NewNamer(l)
	var st Stack
	var want []luaRecord
	for _, r := range recs {
		at := recordedCall(mem, sites[r.line], r)
		if len(at) != 1 {
			t.Errorf("line %d (%s %q): %d candidate instructions, want 1", r.line, r.what, r.name, len(at))
			continue
		}
		if len(r.name) > maxNameLen {
			r.what, r.name = "", "" // longer than a Namer reads
		}
		st.Frames = append(st.Frames, Frame{Kind: KindLua, Caller: at[0]})
		want = append(want, r)
	}
	n.Name(mem, &st)
	for i, f := range st.Frames {
		if f.NameWhat != want[i].what || f.Name != want[i].name {
			t.Errorf("line %d: named %q %q, luajit %q %q", want[i].line, f.NameWhat, f.Name, want[i].what, want[i].name)
		}
	}
	var lines []string
	for _, r := range want {
		lines = append(lines, fmt.Sprintf("%d:%s:%s", r.line, r.what, r.name))
	}
	sort.Strings(lines)
	t.Logf("%d calls named as luajit does: %s", len(want), strings.Join(lines, " "))
}

// recordedCall is the instructions of sites, all of one line, that can
// have made the call r records: call instructions, or, for a metamethod,
// those that call one. namesScript has one a line.
func recordedCall(mem io.ReaderAt, sites []*CallSite, r luaRecord) []*CallSite {
	var at []*CallSite
	for _, cs := range sites {
		b := make([]byte, 4)
		if readFull(mem, b, cs.ReturnPC-4) && (opcodes[b[0]].mm == "call") == (r.what != "metamethod") {
			at = append(at, cs)
		}
	}
	return at
}

// fuzzProto is where FuzzName maps the proto; the strings are at
// strBase.
const fuzzProto = 0x10000

// FuzzName names a call in a proto made of whatever bytes, with the
// strings of whatever region: it must end, not panic, name a call the
// same way twice (the second from the cache), and give only names LuaJIT
// gives. The CallSite matches the proto's own members, so that the
// naming gets past the check of the proto's identity. The seeds are
// TestName's checks and, in testdata/fuzz/FuzzName, real protos from
// LuaJIT (TestGenerateFuzzSeeds). CI runs the seeds as ordinary tests;
// bench/fuzz.sh fuzzes.
func FuzzName(f *testing.F) {
	for _, c := range nameChecks() {
		if c.proto.addr == fuzzProto {
			f.Add(c.memory(), testStrings(), uint32(4*(c.callPos()+1)))
		}
	}
	f.Fuzz(func(t *testing.T, proto, strs []byte, ret uint32) {
		mem := newFakeMem()
		mem.regions[fuzzProto] = proto
		mem.regions[strBase] = strs
		l := namerLayout()
		cs := &CallSite{Proto: fuzzProto, ReturnPC: fuzzProto + uint64(l.ProtoSize) + uint64(ret)}
		if len(proto) >= int(l.ProtoSize) {
			le := binary.LittleEndian
			cs.ChunkName = le.Uint64(proto[l.ProtoChunkName:])
			cs.SizeBC = le.Uint32(proto[l.ProtoSizeBC:])
			cs.FirstLine = le.Uint32(proto[l.ProtoFirstLine:])
			cs.NumLine = le.Uint32(proto[l.ProtoNumLine:])
		}
		n := NewNamer(l)
		what, name := nameCall(n, mem, cs)
		if again, againName := nameCall(n, mem, cs); again != what || againName != name {
			t.Fatalf("named %q %q, then %q %q", what, name, again, againName)
		}
		switch what {
		case "":
			if name != "" {
				t.Fatalf("no namewhat, but name %q", name)
			}
		case "global", "field", "method":
			if len(name) > maxNameLen || strings.IndexByte(name, 0) >= 0 {
				t.Fatalf("%s name %q: longer than %d or with a NUL", what, name, maxNameLen)
			}
		case "local", "upvalue":
			if strings.IndexByte(name, 0) >= 0 {
				t.Fatalf("%s name %q has a NUL", what, name)
			}
		case "metamethod":
			if !strings.HasPrefix(name, "__") {
				t.Fatalf("metamethod %q", name)
			}
		default:
			t.Fatalf("namewhat %q", what)
		}
		if n.size > maxCacheBytes {
			t.Fatalf("cache holds %d bytes", n.size)
		}
	})
}

// TestGenerateFuzzSeeds writes FuzzName seeds from the protos of
// namesScript as LuaJIT made them: each moved to fuzzProto, its
// constant strings to a region at strBase, with a call LuaJIT named.
func TestGenerateFuzzSeeds(t *testing.T) {
	if os.Getenv("NGXPROBE_FUZZ_SEEDS") == "" {
		t.Skip("writes testdata/fuzz/FuzzName; set NGXPROBE_FUZZ_SEEDS=1 to run it")
	}
	pid, fns, recs := runNamesScript(t)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	l := namerLayout()
	le := binary.LittleEndian
	read := func(addr uint64, n int) []byte {
		b := make([]byte, n)
		if !readFull(mem, b, addr) {
			t.Fatalf("read %d bytes at %#x", n, addr)
		}
		return b
	}
	named := map[int]luaRecord{}
	for _, r := range recs {
		named[r.line] = r
	}
	// One seed per kind of name, from the first call LuaJIT named so.
	wanted := map[string]bool{"method": true, "upvalue": true, "local": true, "metamethod": true}
	dir := filepath.Join("testdata", "fuzz", "FuzzName")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, fn := range fns {
		pt := le.Uint64(read(fn+uint64(l.FuncPC), 8)) - uint64(l.ProtoSize)
		proto := read(pt, int(le.Uint32(read(pt+uint64(l.ProtoSizePT), 4))))
		move := func(off int64) {
			if v := le.Uint64(proto[off:]); v >= pt && v < pt+uint64(len(proto)) {
				le.PutUint64(proto[off:], v-pt+fuzzProto)
			}
		}
		k := le.Uint64(proto[l.ProtoK:])
		var strs []byte
		for d := range le.Uint32(proto[l.ProtoSizeKGC:]) {
			off := int64(k - pt - 8*uint64(d+1))
			ref := le.Uint64(proto[off:])
			le.PutUint64(proto[off:], 0)
			if read(ref+9, 1)[0] != 4 { // gct: ~LJ_TSTR
				continue
			}
			size := le.Uint32(read(ref+uint64(l.StrLen), 4))
			le.PutUint64(proto[off:], strBase+uint64(len(strs)))
			strs = append(strs, read(ref, int(l.StrSize)+int(size)+1)...)
			strs = append(strs, make([]byte, -len(strs)&7)...)
		}
		for _, off := range []int64{l.ProtoK, l.ProtoUVInfo, l.ProtoVarInfo, l.ProtoLineInfo} {
			move(off)
		}
		le.PutUint64(proto[l.ProtoChunkName:], 0) // not read: the CallSite copies it
		le.PutUint64(proto[0:], 0)                // nextgc
		sites := callSites(t, mem, l, fn)
		for _, line := range slices.Sorted(maps.Keys(sites)) {
			r, ok := named[line]
			at := recordedCall(mem, sites[line], r)
			if !ok || !wanted[r.what] || len(at) != 1 {
				continue
			}
			delete(wanted, r.what)
			ret := uint32(at[0].ReturnPC - pt - uint64(l.ProtoSize))
			seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nuint32(%d)\n", proto, strs, ret)
			file := filepath.Join(dir, fmt.Sprintf("luajit-%s-line%d", r.what, line))
			if err := os.WriteFile(file, []byte(seed), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s %q, %d bytes of proto", file, r.what, r.name, len(proto))
		}
	}
	if len(wanted) != 0 {
		t.Errorf("no seed for %v", wanted)
	}
}
