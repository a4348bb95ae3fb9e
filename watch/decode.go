package watch

import (
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// dwarfGPR maps x86 encoding order (ax cx dx bx sp bp si di r8..r15) to
// x86-64 DWARF register numbers.
var dwarfGPR = [16]int{
	symbols.RegRAX, symbols.RegRCX, symbols.RegRDX, symbols.RegRBX,
	symbols.RegRSP, symbols.RegRBP, symbols.RegRSI, symbols.RegRDI,
	symbols.RegR8, symbols.RegR9, symbols.RegR10, symbols.RegR11,
	symbols.RegR12, symbols.RegR13, symbols.RegR14, symbols.RegR15,
}

// gpr returns the DWARF number of a general register, its width in bytes
// and the shift of the named part (8 for ah, bh, ch, dh).
func gpr(r x86asm.Reg) (num, width int, shift uint8, ok bool) {
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return dwarfGPR[r-x86asm.AL], 1, 0, true
	case r >= x86asm.AH && r <= x86asm.BH:
		return dwarfGPR[r-x86asm.AH], 1, 8, true
	case r >= x86asm.SPB && r <= x86asm.DIB:
		return dwarfGPR[r-x86asm.SPB+4], 1, 0, true
	case r >= x86asm.R8B && r <= x86asm.R15B:
		return dwarfGPR[r-x86asm.R8B+8], 1, 0, true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return dwarfGPR[r-x86asm.AX], 2, 0, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return dwarfGPR[r-x86asm.EAX], 4, 0, true
	case r >= x86asm.RAX && r <= x86asm.R15:
		return dwarfGPR[r-x86asm.RAX], 8, 0, true
	}
	return NoReg, 0, 0, false
}

// readsOnly lists instructions whose memory operand, though first in
// Intel order, is only read.
var readsOnly = map[x86asm.Op]bool{
	x86asm.CMP: true, x86asm.TEST: true, x86asm.BT: true, x86asm.PUSH: true,
	x86asm.CALL: true, x86asm.LCALL: true, x86asm.JMP: true, x86asm.LJMP: true,
	x86asm.NOP: true, x86asm.PREFETCHNTA: true, x86asm.PREFETCHT0: true,
	x86asm.PREFETCHT1: true, x86asm.PREFETCHT2: true, x86asm.PREFETCHW: true,
	x86asm.CLFLUSH: true, x86asm.MUL: true, x86asm.IMUL: true, x86asm.DIV: true,
	x86asm.IDIV: true, x86asm.LDMXCSR: true, x86asm.VLDMXCSR: true,
	x86asm.FXRSTOR: true, x86asm.FXRSTOR64: true, x86asm.XRSTOR: true,
	x86asm.XRSTOR64: true, x86asm.LGDT: true, x86asm.LIDT: true,
	x86asm.LLDT: true, x86asm.LMSW: true, x86asm.VERR: true, x86asm.VERW: true,
	x86asm.INVLPG: true, x86asm.LEA: true, x86asm.BOUND: true,
}

// x87Stores are the x87 instructions that write their memory operand; the
// others (fld, fadd m32, fcom, ...) read it.
var x87Stores = map[x86asm.Op]bool{
	x86asm.FST: true, x86asm.FSTP: true, x86asm.FIST: true, x86asm.FISTP: true,
	x86asm.FISTTP: true, x86asm.FNSTCW: true, x86asm.FNSTSW: true,
	x86asm.FNSTENV: true, x86asm.FNSAVE: true, x86asm.FBSTP: true,
}

// isStringOp reports stos/movs: they write (%rdi) implicitly, possibly many
// times (rep); which object they write is not in the instruction.
func isStringOp(op x86asm.Op) bool {
	switch op {
	case x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ,
		x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ:
		return true
	}
	return false
}

func writesMemArg(inst x86asm.Inst) bool {
	if readsOnly[inst.Op] {
		return false
	}
	if name := inst.Op.String(); strings.HasPrefix(name, "F") && !strings.HasPrefix(name, "FX") {
		return x87Stores[inst.Op]
	}
	return true
}

// skip says why a memory operand is not a candidate: it is not the
// watched field of any heap or static-through-pointer object.
type skip uint8

const (
	notSkipped   skip = iota
	skipStack         // rsp-based: a stack slot
	skipRIP           // rip-relative: a global, named by address
	skipAbsolute      // no base or index register, or a segment override
)

// classify returns the sites of one decoded instruction at pc: none when
// it does not write memory, or not the field's bytes for any base the
// field may be reached from, or writes the stack (why says so). Sites of
// kind NoEffect are returned. st, when not nil, is the analysis state
// before the instruction (see flow.go); function, file offset and line
// information are left empty.
func classify(inst x86asm.Inst, pc uint64, field FieldRef, globals *globalIndex, st *regState) ([]Site, skip) {
	// The written memory operand: the first argument in Intel order, or
	// either argument of xchg.
	mi := -1
	for i, a := range inst.Args {
		if a == nil {
			break
		}
		if _, ok := a.(x86asm.Mem); ok {
			if i == 0 || inst.Op == x86asm.XCHG {
				mi = i
			}
			break
		}
	}
	if mi < 0 || isStringOp(inst.Op) || !writesMemArg(inst) {
		return nil, notSkipped
	}
	m := inst.Args[mi].(x86asm.Mem)
	size := inst.MemBytes
	var reason []string
	if size <= 0 {
		// Not expected for an explicit memory operand; assume the widest
		// general access rather than miss a write.
		size = 8
		reason = append(reason, "operand size unknown")
	}
	common := Site{
		Address: pc,
		Len:     inst.Len,
		Base:    NoReg,
		Index:   NoReg,
		SrcReg:  NoReg,
		Disp:    m.Disp,
		Size:    size,
		Field:   field,
	}
	type cand struct {
		base Base
		off  int64 // of the write from the object's start
	}
	var cands []cand
	if m.Base == x86asm.RIP || m.Base == x86asm.EIP {
		target := pc + uint64(inst.Len) + uint64(m.Disp)
		obj, name, ok := globals.objectAt(target)
		if !ok {
			return nil, skipRIP
		}
		off := int64(target - obj)
		if !field.Overlaps(off, size) {
			return nil, notSkipped
		}
		common.Disp = off
		common.Global, common.GlobalAddr = name, obj
		cands = append(cands, cand{Base{}, off})
	} else {
		for _, b := range field.bases() {
			if off := m.Disp + b.At; field.Overlaps(off, size) {
				cands = append(cands, cand{b, off})
			}
		}
		if len(cands) == 0 {
			return nil, notSkipped
		}
		switch {
		case m.Segment == x86asm.FS || m.Segment == x86asm.GS:
			return nil, skipAbsolute
		case m.Base == 0 && m.Index == 0:
			return nil, skipAbsolute
		}
		if m.Base != 0 {
			n, w, _, ok := gpr(m.Base)
			if !ok {
				return nil, skipAbsolute
			}
			if n == symbols.RegRSP {
				return nil, skipStack
			}
			common.Base = n
			if w != 8 {
				reason = append(reason, fmt.Sprintf("%d-bit address", w*8))
			}
		}
		if m.Index != 0 {
			n, _, _, ok := gpr(m.Index)
			if !ok {
				return nil, skipAbsolute
			}
			common.Index, common.Scale = n, m.Scale
		}
	}
	common.Text = x86asm.GNUSyntax(inst, pc, nil)

	// The source operand: an immediate, a general register (with what
	// the analysis knows of it), or something else.
	var src x86asm.Arg
	if mi == 0 {
		src = inst.Args[1]
	} else {
		src = inst.Args[0]
	}
	var srcVal absVal
	haveVal := false
	switch a := src.(type) {
	case x86asm.Imm:
		common.Imm, common.HasImm = uint64(a)&widthMask(size), true
		srcVal, haveVal = constVal(common.Imm), true
	case x86asm.Reg:
		if n, _, sh, ok := gpr(a); ok {
			common.SrcReg, common.SrcShift = n, sh
			if st != nil {
				srcVal, haveVal = st.view(a)
			}
		} else if st != nil && a >= x86asm.X0 && a <= x86asm.X15 && st.xmmZero&(1<<uint(a-x86asm.X0)) != 0 {
			srcVal, haveVal = constVal(0), true // pxor %xmm0,%xmm0 earlier
		} else if st != nil && a >= x86asm.Y0 && a <= x86asm.Y15 && st.xmmZero&(1<<uint(a-x86asm.Y0)) != 0 {
			srcVal, haveVal = constVal(0), true
		}
	}
	if inst.Op == x86asm.NOT {
		common.Imm, common.HasImm = widthMask(size), true
		srcVal, haveVal = constVal(common.Imm), true
	}
	var storeOrg origin
	storeOrgOK := false
	if o, ok := memOrigin(m, pc); ok {
		storeOrg, storeOrgOK = o, true
	}

	var out []Site
	for _, c := range cands {
		s := common
		s.BaseAt, s.Via = c.base.At, c.base.Via
		s.Reason = strings.Join(reason, "; ")
		s.Kind, s.Effect = effect(inst, &s, field, c.off, size, src, srcVal, haveVal, storeOrg, storeOrgOK)
		out = append(out, s)
	}
	return out, notSkipped
}

// effect works out what the instruction does to the field, the write
// being at offset off from the object's start.
func effect(inst x86asm.Inst, s *Site, field FieldRef, off int64, size int, src x86asm.Arg, srcVal absVal, haveVal bool, storeOrg origin, storeOrgOK bool) (Kind, Effect) {
	// Operand bit q is field bit q+rel.
	rel := int((off-field.Offset)*8) - field.BitOffset
	fm := field.Mask()
	var cov uint64 // field bits the write covers
	for f := 0; f < field.BitSize; f++ {
		if q := f - rel; q >= 0 && q < 8*size {
			cov |= 1 << uint(f)
		}
	}
	toField := func(v uint64) uint64 { return shift(v, -rel) & cov }
	e := Effect{Keep: fm, SrcReg: NoReg}
	unknown := func(why string) (Kind, Effect) {
		if s.Reason != "" {
			s.Reason += "; "
		}
		s.Reason += why
		return Unknown, Effect{SrcReg: NoReg}
	}
	if size > 8 {
		if haveVal && srcVal.known == ^uint64(0) && srcVal.val == 0 && isStoreOp(inst.Op) {
			// A zeroed vector register stored over the field: memzero.
			e.Keep = fm &^ cov
			e.Valid = true
			return Store, e
		}
		if isVector(src) {
			return unknown(strings.ToLower(inst.Op.String()) + " from a vector register (not in pt_regs)")
		}
		return unknown(strings.ToLower(inst.Op.String()) + fmt.Sprintf(" of %d bytes", size))
	}
	if strings.Contains(s.Reason, "operand size unknown") {
		return unknown(strings.ToLower(inst.Op.String()))
	}
	// Whether the source is known on every covered field bit.
	static := haveVal && toField(srcVal.known) == cov
	regOp := func(k Kind) (Kind, Effect) {
		switch {
		case static:
			v := toField(srcVal.val)
			switch k {
			case SetBits:
				e.Set = v
			case ClearBits:
				e.Keep = fm &^ (cov &^ v)
			case ToggleBits:
				e.Flip = v
			}
		case s.SrcReg != NoReg:
			e.SrcReg, e.SrcShift, e.SrcOp, e.Take = s.SrcReg, int(s.SrcShift)-rel, k, cov
		default:
			return unknown("operand is not an immediate or a general register")
		}
		return k, e
	}
	var kind Kind
	switch op := inst.Op; {
	case op == x86asm.OR:
		kind, e = regOp(SetBits)
	case op == x86asm.AND:
		kind, e = regOp(ClearBits)
	case op == x86asm.XOR || op == x86asm.NOT:
		kind, e = regOp(ToggleBits)
	case op == x86asm.BTS || op == x86asm.BTR || op == x86asm.BTC:
		if !s.HasImm {
			// A register bit offset addresses a bit string: any byte
			// around the operand, not only the operand's.
			return unknown("bit index in a register")
		}
		bit := toField(1 << (s.Imm % uint64(size*8)))
		switch inst.Op {
		case x86asm.BTS:
			kind, e.Set = BitTestSet, bit
		case x86asm.BTR:
			kind, e.Keep = BitTestReset, fm&^bit
		default:
			kind, e.Flip = BitTestComplement, bit
		}
	case isStoreOp(op):
		kind = Store
		e.Keep = fm &^ cov
		// Covered bits the source holds as loaded from the very bits it
		// is stored to are kept; known bits are constants.
		var kept uint64
		if haveVal && srcVal.old != 0 && storeOrgOK && sameUnit(srcVal.org, storeOrg) && srcVal.org.bitOff == storeOrg.bitOff {
			kept = toField(srcVal.old)
		}
		switch {
		case haveVal && toField(srcVal.known)|kept == cov:
			e.Keep |= kept
			e.Set = toField(srcVal.val) &^ kept
			if kept != 0 || srcVal.old != 0 {
				s.LoadAddr = srcVal.org.at
			}
		case s.SrcReg != NoReg:
			e.SrcReg, e.SrcShift, e.SrcOp, e.Take = s.SrcReg, int(s.SrcShift)-rel, Store, cov
			if haveVal && srcVal.old != 0 {
				s.LoadAddr = srcVal.org.at
			}
		case isVector(src):
			return unknown(strings.ToLower(inst.Op.String()) + " from a vector register (not in pt_regs)")
		default:
			return unknown("source is not a general register")
		}
	default:
		return unknown(strings.ToLower(inst.Op.String()))
	}
	e.Valid = true
	if e.SrcReg == NoReg && e.Keep == fm && e.Set == 0 && e.Flip == 0 {
		kind = NoEffect
	}
	return kind, e
}

// isStoreOp reports the plain stores: the operand's bytes become the
// source's.
func isStoreOp(op x86asm.Op) bool {
	switch op {
	case x86asm.MOV, x86asm.XCHG, x86asm.MOVUPS, x86asm.MOVAPS, x86asm.MOVUPD, x86asm.MOVAPD,
		x86asm.MOVDQU, x86asm.MOVDQA, x86asm.MOVQ, x86asm.MOVD, x86asm.MOVNTI, x86asm.MOVNTDQ,
		x86asm.MOVNTPS, x86asm.VMOVDQU, x86asm.VMOVDQA, x86asm.VMOVUPS, x86asm.VMOVAPS:
		return true
	}
	return false
}

func isVector(a x86asm.Arg) bool {
	r, ok := a.(x86asm.Reg)
	if !ok {
		return false
	}
	name := r.String()
	return strings.HasPrefix(name, "X") || strings.HasPrefix(name, "Y") || strings.HasPrefix(name, "Z") || strings.HasPrefix(name, "M")
}

// LoadedFromSameWord reports whether the register a site stores was
// loaded from the very word it writes (same base, index and
// displacement): a read-modify-write, as bitfield updates are, rather
// than a copy out of another object. False when the site ends no
// read-modify-write sequence (LoadAddr 0) or the load cannot be read.
func LoadedFromSameWord(bin *symbols.Binary, s Site) bool {
	if s.LoadAddr == 0 {
		return false
	}
	code, err := bin.Code(s.LoadAddr, 16)
	if err != nil {
		return false
	}
	inst, err := x86asm.Decode(code, 64)
	if err != nil {
		return false
	}
	for _, a := range inst.Args {
		if m, ok := a.(x86asm.Mem); ok {
			return dwarfReg(m.Base) == s.Base && dwarfReg(m.Index) == s.Index && m.Disp == s.Disp
		}
	}
	return false
}

// dwarfReg is the DWARF number of an address register, NoReg for none.
func dwarfReg(r x86asm.Reg) int {
	if r == 0 {
		return NoReg
	}
	n, _, _, ok := gpr(r)
	if !ok {
		return NoReg
	}
	return n
}
