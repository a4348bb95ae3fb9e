package watch

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Kind says what an instruction does to the watched field.
type Kind uint8

const (
	// Unknown writes the field's bytes in a way this package does not
	// model (add, inc, shifts, cmpxchg, setcc, stores from vector
	// registers, bts with a register bit index, ...). Such a site is
	// reported, never dropped; see Site.Reason and the package doc for
	// how to evaluate it at run time.
	Unknown           Kind = iota
	SetBits                // or: bits of Imm (or of the source register) become 1
	ClearBits              // and: bits clear in Imm (or the source register) become 0
	ToggleBits             // xor, not: bits of Imm (or the source register) flip
	BitTestSet             // bts $n: bit n becomes 1
	BitTestReset           // btr $n: bit n becomes 0
	BitTestComplement      // btc $n: bit n flips
	Store                  // mov, xchg: the covered bits are replaced by Imm's or the source register's
	// NoEffect is an or/and/xor/bt* whose operand leaves the field's
	// bits alone, or a read-modify-write store that puts them back as
	// loaded. Scan drops these sites unless Options.KeepNoEffect.
	NoEffect
)

var kindNames = [...]string{
	Unknown:           "unknown",
	SetBits:           "set",
	ClearBits:         "clear",
	ToggleBits:        "toggle",
	BitTestSet:        "bts",
	BitTestReset:      "btr",
	BitTestComplement: "btc",
	Store:             "store",
	NoEffect:          "no-effect",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Kinds lists every kind, in order, for reports.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kindNames))
	for k := range kindNames {
		out = append(out, Kind(k))
	}
	return out
}

// NoReg is the register number of an absent base, index or source.
const NoReg = -1

// Frame is one level of the source position of an instruction: the
// innermost inlined function first, the containing function last.
type Frame struct {
	Function string
	File     string
	Line     int
}

// Site is one instruction that may write the watched field.
//
// Registers are DWARF numbers (x86-64: rax 0, rdx 1, rcx 2, rbx 3, rsi 4,
// rdi 5, rbp 6, rsp 7, r8-r15 8-15). The address written is
// Base + Index*Scale + Disp; if the instruction writes the field of an
// object, the object starts at Base + Index*Scale - BaseAt (ObjectAddress).
type Site struct {
	Function     string // ELF symbol containing the instruction ("ngx_unix_recv", "foo.isra.0", "bar.cold"); "" outside any
	FunctionAddr uint64 // that symbol's address
	Address      uint64 // the instruction's virtual address
	FileOffset   uint64 // the instruction's file offset: where a uprobe attaches
	Len          int    // encoded length; the next instruction is at Address+Len
	Text         string // GNU (AT&T) syntax, as objdump prints it
	Bytes        []byte // the encoding, to check a binary before attaching

	Base  int   // DWARF register, NoReg when absent
	Index int   // DWARF register, NoReg when absent
	Scale uint8 // 1, 2, 4 or 8 when Index is set
	Disp  int64 // displacement
	Size  int   // bytes written at Base+Index*Scale+Disp
	// Global names the object of a rip-relative write to a global of the
	// watched type ("ngx_cleaner_event", "events[3]"); GlobalAddr is its
	// link-time address (add the load bias), and Disp is the write's
	// offset in it. Base and Index are NoReg then.
	Global     string
	GlobalAddr uint64
	// BaseAt is where the base register is assumed to point in the
	// object (see Base): the object starts at Base+Index*Scale-BaseAt,
	// and the write is at offset Disp+BaseAt in it. Via names the member
	// or container that puts the base there ("" for the object itself).
	// One instruction may give several sites, one per base that fits.
	BaseAt int64
	Via    string

	Kind     Kind
	Imm      uint64 // the immediate, zero-extended from Size bytes (HasImm)
	HasImm   bool
	SrcReg   int   // general register operand (DWARF number), NoReg when the operand is an immediate
	SrcShift uint8 // 8 when SrcReg is ah, bh, ch or dh: the operand is (reg >> 8)
	Effect   Effect
	Reason   string // for Unknown: why the write is not modelled (also notes such as "32-bit address")
	// LoadAddr is the address of the load a stored register was read
	// from, when the store ends a read-modify-write sequence the
	// analysis followed (movzbl 0x9(%rax),%edx; or $1,%edx; mov
	// %dl,0x9(%rax)); 0 otherwise.
	LoadAddr uint64

	Field FieldRef

	// Hint says whether the DWARF variables in the base register at the
	// instruction fit the site's reading; BaseVars names them, the one
	// that decided Hint first ("rev (ngx_event_t *)").
	Hint     TypeHint
	BaseVars []string

	File string // source file of the innermost frame, "" without line info
	Line int    // its line
	// Lines are the source lines of a read-modify-write sequence, from
	// LoadAddr to the store (GCC merges adjacent bitfield assignments:
	// rev->ready = 0; rev->eof = 1; is one 16-bit store on the first
	// line's row). Only set when LoadAddr is; it includes Line.
	Lines  []int
	Frames []Frame // innermost first; empty without DWARF
}

// Effect is a site's effect on the field in the field's own coordinates:
// values are right-aligned, bit 0 is the field's lowest bit. Bits of the
// field the instruction does not cover are in Keep. For a BPF program:
//
//	new = ((old & Keep) | Set) ^ Flip
//	if SrcReg != NoReg:
//		s = shift(regs[SrcReg], SrcShift) & Take  // SrcShift > 0: right shift, < 0: left
//		switch SrcOp: Store: new |= s; SetBits: new |= s; ClearBits: new &= s | ^Take; ToggleBits: new ^= s
type Effect struct {
	Keep, Set, Flip uint64
	Take            uint64 // the covered bits, taken from the source register
	SrcReg          int    // NoReg when the operand is an immediate (already folded into Keep, Set, Flip)
	SrcShift        int
	SrcOp           Kind // Store, SetBits, ClearBits or ToggleBits when SrcReg is set
	Valid           bool // false for Unknown sites
}

func shift(v uint64, n int) uint64 {
	switch {
	case n >= 64 || n <= -64:
		return 0
	case n >= 0:
		return v >> uint(n)
	default:
		return v << uint(-n)
	}
}

// Apply returns the field's value after the instruction, given its value
// before (right-aligned) and, for register operands, the source register's
// full 64-bit value (ignored otherwise).
func (e Effect) Apply(old, src uint64) uint64 {
	v := (old&e.Keep | e.Set) ^ e.Flip
	if e.SrcReg != NoReg {
		s := shift(src, e.SrcShift) & e.Take
		switch e.SrcOp {
		case Store, SetBits:
			v |= s
		case ClearBits:
			v &= s | ^e.Take
		case ToggleBits:
			v ^= s
		}
	}
	return v
}

// Apply returns the watched field's value after the instruction runs,
// given the value before (right-aligned, as the field reads in C) and the
// source register's value (ignored for immediates). ok is false for sites
// whose effect is not modelled (Unknown).
func (s Site) Apply(old, src uint64) (uint64, bool) {
	if !s.Effect.Valid {
		return 0, false
	}
	return s.Effect.Apply(old&s.Field.Mask(), src) & s.Field.Mask(), true
}

// Const returns the value the field has after the instruction whatever it
// was before (orb $1 on a 1-bit field: 1; andb $0xfe: 0; a store of an
// immediate covering the whole field), or ok false when it depends on the
// old value or a register.
func (s Site) Const() (uint64, bool) {
	e := s.Effect
	if !e.Valid || e.SrcReg != NoReg || e.Keep&^e.Set&s.Field.Mask() != 0 {
		return 0, false
	}
	return (e.Set ^ e.Flip) & s.Field.Mask(), true
}

// ObjectOffset is the offset of the write from the start of the object
// whose field it writes: Disp+BaseAt.
func (s Site) ObjectOffset() int64 { return s.Disp + s.BaseAt }

// ObjectAddress returns the address of the object the site writes, given
// the base and index registers' values at the instruction (and, for a
// global, the load bias of the binary).
func (s Site) ObjectAddress(base, index, bias uint64) uint64 {
	if s.Global != "" {
		return s.GlobalAddr + bias
	}
	a := base
	if s.Index != NoReg {
		a += index * uint64(s.Scale)
	}
	return a - uint64(s.BaseAt)
}

// String is the --explain form: where, what, and what it does.
func (s Site) String() string {
	var b strings.Builder
	fn := s.Function
	if fn == "" {
		fn = "?"
	}
	fmt.Fprintf(&b, "%s+%#x", fn, s.Address-s.FunctionAddr)
	if s.File != "" {
		fmt.Fprintf(&b, " %s:%d", shortPath(s.File), s.Line)
		if len(s.Lines) > 1 {
			var ls []string
			for _, l := range s.Lines {
				ls = append(ls, fmt.Sprint(l))
			}
			fmt.Fprintf(&b, " (lines %s)", strings.Join(ls, ","))
		}
	}
	if len(s.Frames) > 1 {
		var in []string
		for _, f := range s.Frames[:len(s.Frames)-1] {
			in = append(in, f.Function)
		}
		fmt.Fprintf(&b, " (inlined %s)", strings.Join(in, " <- "))
	}
	fmt.Fprintf(&b, " %#x: %s  [%s", s.Address, s.Text, s.Kind)
	if s.Global != "" {
		fmt.Fprintf(&b, " %s", s.Global)
	}
	if s.Via != "" {
		fmt.Fprintf(&b, " via %s", s.Via)
	}
	if s.LoadAddr != 0 {
		fmt.Fprintf(&b, " rmw from %#x", s.LoadAddr)
	}
	if s.Hint != HintNone {
		fmt.Fprintf(&b, " %s: %s", s.Hint, strings.Join(s.BaseVars, ", "))
	}
	if v, ok := s.Const(); ok {
		fmt.Fprintf(&b, " -> %d", v)
	}
	if s.Reason != "" {
		fmt.Fprintf(&b, ": %s", s.Reason)
	}
	b.WriteString("]")
	return b.String()
}

// shortPath keeps a source path from its "src/" on, the way nginx's
// sources name themselves.
func shortPath(p string) string {
	if i := strings.LastIndex(p, "/src/"); i >= 0 {
		return p[i+1:]
	}
	return filepath.Clean(p)
}
