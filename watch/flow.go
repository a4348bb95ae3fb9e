package watch

import (
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// A small forward analysis over straight-line code tells what a register
// holds when it is stored over the field. GCC writes bitfields with
// read-modify-write sequences:
//
//	movzwl 0x8(%r14),%eax      ; load the storage unit
//	and    $0xfedf,%ax         ; rev->ready = 0
//	or     $0x1,%ah            ; rev->eof = 1
//	mov    %ax,0x8(%r14)       ; store it back
//
// Tracking, for every bit of every general register, whether it is a known
// constant or a copy of a bit loaded from memory (and from where) shows
// that the store sets eof to 1, leaves the other bits of the unit alone
// for our purposes, and needs no register read at run time. A store that
// puts every bit of the field back where it was loaded from is NoEffect.
//
// The state is reset at every branch target in the function, after every
// unconditional jump, call and return, and by any instruction the
// analysis does not model; stores to memory that may overlap a loaded
// unit forget where loaded bits came from. Indirect jumps through tables
// can land on targets not seen as branch targets; see the package doc.

// origin is the memory a register's loaded bits came from: register bit p
// is memory bit p+bitOff counted from the address base+index*scale.
type origin struct {
	base, index int
	scale       uint8
	bitOff      int64
	at          uint64 // the load's address
}

// absVal is what is known of a value, bit by bit: a constant (known, val)
// or a copy of a loaded bit (old, from org); other bits are unknown.
type absVal struct {
	known, val uint64
	old        uint64
	org        origin
}

func unknownVal() absVal { return absVal{} }

func constVal(v uint64) absVal { return absVal{known: ^uint64(0), val: v} }

// regState is the analysis state: the 16 general registers (by DWARF
// number) and which xmm registers are known to be zero.
type regState struct {
	r       [16]absVal
	xmmZero uint32
}

func (s *regState) reset() { *s = regState{} }

// view returns a register operand's value as an operand-sized value: the
// part named by r, shifted down for ah..bh, bits above its width unknown.
func (s *regState) view(r x86asm.Reg) (absVal, bool) {
	n, w, sh, ok := gpr(r)
	if !ok {
		return absVal{}, false
	}
	v := s.r[n]
	m := widthMask(w)
	out := absVal{
		known: (v.known >> sh) & m,
		val:   (v.val >> sh) & m,
		old:   (v.old >> sh) & m,
		org:   v.org,
	}
	out.org.bitOff += int64(sh)
	return out, true
}

func widthMask(bytes int) uint64 {
	if bytes >= 8 {
		return ^uint64(0)
	}
	return 1<<(8*uint(bytes)) - 1
}

// set writes an operand-sized value to register r with x86-64 semantics:
// 32-bit writes zero the upper half, 8- and 16-bit writes keep the rest.
func (s *regState) set(r x86asm.Reg, v absVal) {
	n, w, sh, ok := gpr(r)
	if !ok {
		return
	}
	m := widthMask(w)
	cur := s.r[n]
	if w == 4 {
		cur = constVal(0) // upper half zeroed; lower half replaced below
		sh = 0
	}
	keep := ^(m << sh)
	out := absVal{
		known: cur.known&keep | (v.known&m)<<sh,
		val:   cur.val&keep | (v.val&m)<<sh,
	}
	curOld, newOld := cur.old&keep, (v.old&m)<<sh
	vorg := v.org
	vorg.bitOff -= int64(sh)
	switch {
	case newOld == 0:
		out.old, out.org = curOld, cur.org
	case curOld == 0 || cur.org == vorg:
		out.old, out.org = curOld|newOld, vorg
	default:
		// Bits from two different loads: keep the new ones.
		out.old, out.org = newOld, vorg
	}
	s.r[n] = out
	s.clobbered(n)
}

// clobbered forgets loaded bits whose address used register n, which has
// just changed.
func (s *regState) clobbered(n int) {
	for i := range s.r {
		if o := s.r[i].org; s.r[i].old != 0 && (o.base == n || o.index == n) {
			s.r[i].old = 0
		}
	}
}

func (s *regState) setUnknown(r x86asm.Reg) {
	s.set(r, unknownVal())
}

// forgetLoads drops every loaded bit: memory may have changed under them.
func (s *regState) forgetLoads() {
	for i := range s.r {
		s.r[i].old = 0
	}
}

// memOrigin is where a memory operand's bit 0 is, as an origin, when the
// operand is base(+index)-relative and not on the stack.
func memOrigin(m x86asm.Mem, pc uint64) (origin, bool) {
	if m.Base == x86asm.RIP || m.Segment == x86asm.FS || m.Segment == x86asm.GS || m.Base == 0 {
		return origin{}, false
	}
	b, w, _, ok := gpr(m.Base)
	if !ok || w != 8 {
		return origin{}, false
	}
	o := origin{base: b, index: NoReg, bitOff: 8 * m.Disp, at: pc}
	if m.Index != 0 {
		i, _, _, ok := gpr(m.Index)
		if !ok {
			return origin{}, false
		}
		o.index, o.scale = i, m.Scale
	}
	return o, true
}

// sameUnit reports whether two origins address memory from the same
// register base, so their bit offsets compare.
func sameUnit(a, b origin) bool {
	return a.base == b.base && a.index == b.index && (a.index == NoReg || a.scale == b.scale)
}

// valueOf evaluates a source operand: an immediate or a general register.
func (s *regState) valueOf(a x86asm.Arg, size int) (absVal, bool) {
	switch a := a.(type) {
	case x86asm.Imm:
		return constVal(uint64(a) & widthMask(size)), true
	case x86asm.Reg:
		return s.view(a)
	}
	return absVal{}, false
}

// regDestOps write only their first argument (when it is a register),
// besides flags.
var regDestOps = map[x86asm.Op]bool{
	x86asm.MOV: true, x86asm.MOVZX: true, x86asm.MOVSX: true, x86asm.MOVSXD: true,
	x86asm.AND: true, x86asm.OR: true, x86asm.XOR: true, x86asm.ADD: true,
	x86asm.SUB: true, x86asm.ADC: true, x86asm.SBB: true, x86asm.SHL: true,
	x86asm.SHR: true, x86asm.SAR: true, x86asm.ROL: true, x86asm.ROR: true,
	x86asm.RCL: true, x86asm.RCR: true, x86asm.NOT: true, x86asm.NEG: true,
	x86asm.INC: true, x86asm.DEC: true, x86asm.LEA: true, x86asm.BSF: true,
	x86asm.BSR: true, x86asm.POPCNT: true, x86asm.TZCNT: true, x86asm.LZCNT: true,
	x86asm.BSWAP: true, x86asm.BTS: true, x86asm.BTR: true, x86asm.BTC: true,
	x86asm.MOVD: true, x86asm.MOVQ: true, x86asm.POP: true, x86asm.SHLD: true,
	x86asm.SHRD: true, x86asm.ANDN: true, x86asm.BLSR: true, x86asm.BLSI: true,
	x86asm.SARX: true, x86asm.SHLX: true, x86asm.SHRX: true, x86asm.RORX: true,
	x86asm.CMC: true, x86asm.CLC: true, x86asm.STC: true, x86asm.CLD: true,
}

// memDestOps write (only) their memory operand when it comes first.
var memDestOps = map[x86asm.Op]bool{
	x86asm.MOV: true, x86asm.OR: true, x86asm.AND: true, x86asm.XOR: true,
	x86asm.ADD: true, x86asm.SUB: true, x86asm.ADC: true, x86asm.SBB: true,
	x86asm.INC: true, x86asm.DEC: true, x86asm.NEG: true, x86asm.NOT: true,
	x86asm.SHL: true, x86asm.SHR: true, x86asm.SAR: true, x86asm.ROL: true,
	x86asm.ROR: true, x86asm.BTS: true, x86asm.BTR: true, x86asm.BTC: true,
	x86asm.MOVUPS: true, x86asm.MOVAPS: true, x86asm.MOVUPD: true, x86asm.MOVAPD: true,
	x86asm.MOVDQU: true, x86asm.MOVDQA: true, x86asm.MOVQ: true, x86asm.MOVD: true,
	x86asm.MOVSS: true, x86asm.MOVSD_XMM: true, x86asm.MOVLPS: true, x86asm.MOVHPS: true,
	x86asm.MOVLPD: true, x86asm.MOVHPD: true, x86asm.MOVNTI: true, x86asm.MOVNTDQ: true,
	x86asm.MOVNTPS: true, x86asm.VMOVDQU: true, x86asm.VMOVDQA: true, x86asm.VMOVUPS: true,
	x86asm.VMOVAPS: true, x86asm.VMOVQ: true, x86asm.VMOVD: true,
	x86asm.SETA: true, x86asm.SETAE: true, x86asm.SETB: true, x86asm.SETBE: true,
	x86asm.SETE: true, x86asm.SETG: true, x86asm.SETGE: true, x86asm.SETL: true,
	x86asm.SETLE: true, x86asm.SETNE: true, x86asm.SETNO: true, x86asm.SETNP: true,
	x86asm.SETNS: true, x86asm.SETO: true, x86asm.SETP: true, x86asm.SETS: true,
}

// noRegWrites leave the general registers alone.
var noRegWrites = map[x86asm.Op]bool{
	x86asm.CMP: true, x86asm.TEST: true, x86asm.BT: true, x86asm.NOP: true,
	x86asm.PUSH: true, x86asm.PREFETCHNTA: true, x86asm.PREFETCHT0: true,
	x86asm.PREFETCHT1: true, x86asm.PREFETCHT2: true, x86asm.PREFETCHW: true,
	x86asm.UCOMISS: true, x86asm.UCOMISD: true, x86asm.COMISS: true, x86asm.COMISD: true,
	x86asm.PAUSE: true, x86asm.MFENCE: true, x86asm.LFENCE: true, x86asm.SFENCE: true,
}

func isCond(op x86asm.Op) (jcc, cmov, setcc bool) {
	name := op.String()
	switch {
	case op == x86asm.JMP || op == x86asm.LJMP:
		return false, false, false
	case strings.HasPrefix(name, "J"):
		return true, false, false
	case strings.HasPrefix(name, "CMOV"):
		return false, true, false
	case strings.HasPrefix(name, "SET"):
		return false, false, true
	}
	return false, false, false
}

// endsBlock reports instructions after which the next one is reached only
// by a jump (or a return from a call, with the caller-saved registers
// changed): the state is reset after them.
func endsBlock(op x86asm.Op) bool {
	switch op {
	case x86asm.JMP, x86asm.LJMP, x86asm.RET, x86asm.LRET, x86asm.CALL, x86asm.LCALL,
		x86asm.UD1, x86asm.UD2, x86asm.HLT, x86asm.SYSCALL, x86asm.INT:
		return true
	}
	return false
}

// step updates the state for one instruction at pc.
func (s *regState) step(inst x86asm.Inst, pc uint64) {
	if endsBlock(inst.Op) {
		s.reset()
		return
	}
	if jcc, cmov, setcc := isCond(inst.Op); jcc {
		return // the fall-through path keeps the state
	} else if cmov || setcc {
		if r, ok := inst.Args[0].(x86asm.Reg); ok {
			s.setUnknown(r)
		} else if m, ok := inst.Args[0].(x86asm.Mem); ok {
			s.stored(m, inst.MemBytes)
		}
		return
	}
	a0 := inst.Args[0]
	// Vector registers: only "zeroed" is tracked.
	if r, ok := a0.(x86asm.Reg); ok && r >= x86asm.X0 && r <= x86asm.X15 {
		x := uint32(1) << uint(r-x86asm.X0)
		switch inst.Op {
		case x86asm.PXOR, x86asm.XORPS, x86asm.XORPD:
			if inst.Args[1] == a0 {
				s.xmmZero |= x
				return
			}
		}
		s.xmmZero &^= x
		return
	}
	if r, ok := a0.(x86asm.Reg); ok && r >= x86asm.Y0 && r <= x86asm.Y15 {
		x := uint32(1) << uint(r-x86asm.Y0)
		if (inst.Op == x86asm.VPXOR || inst.Op == x86asm.VXORPS) && inst.Args[1] == inst.Args[2] {
			s.xmmZero |= x
		} else {
			s.xmmZero &^= x
		}
		return
	}
	if noRegWrites[inst.Op] {
		return
	}
	if m, ok := a0.(x86asm.Mem); ok {
		switch {
		case memDestOps[inst.Op]:
			s.stored(m, inst.MemBytes)
		case inst.Op == x86asm.XCHG || inst.Op == x86asm.XADD:
			s.stored(m, inst.MemBytes)
			if r, ok := inst.Args[1].(x86asm.Reg); ok {
				s.setUnknown(r)
			}
		default:
			// cmpxchg, mul/div and anything else with implicit
			// register effects.
			s.reset()
		}
		return
	}
	if isStringOp(inst.Op) {
		s.reset()
		return
	}
	r, ok := a0.(x86asm.Reg)
	if !ok || !regDestOps[inst.Op] {
		if ok {
			if _, _, _, isGPR := gpr(r); !isGPR {
				return // a vector, mask or x87 destination
			}
		}
		s.reset()
		return
	}
	if _, _, _, isGPR := gpr(r); !isGPR {
		return
	}
	_, w, _, _ := gpr(r)
	switch inst.Op {
	case x86asm.MOV, x86asm.MOVZX:
		switch src := inst.Args[1].(type) {
		case x86asm.Imm:
			s.set(r, constVal(uint64(src)&widthMask(w)))
			return
		case x86asm.Reg:
			if v, ok := s.view(src); ok {
				if inst.Op == x86asm.MOVZX {
					_, sw, _, _ := gpr(src)
					m := widthMask(sw)
					v.known, v.val, v.old = v.known&m|^m, v.val&m, v.old&m
				}
				s.set(r, v)
				return
			}
		case x86asm.Mem:
			if o, ok := memOrigin(src, pc); ok && inst.MemBytes > 0 && inst.MemBytes <= 8 {
				m := widthMask(inst.MemBytes)
				v := absVal{old: m, org: o}
				if inst.Op == x86asm.MOVZX {
					v.known = ^m & widthMask(w)
				}
				s.set(r, v)
				return
			}
		}
	case x86asm.AND, x86asm.OR:
		if v, ok := s.view(r); ok {
			if src, ok := s.valueOf(inst.Args[1], w); ok {
				s.set(r, combine(inst.Op, v, src))
				return
			}
		}
	case x86asm.XOR:
		if src, ok := inst.Args[1].(x86asm.Reg); ok && src == r {
			s.set(r, constVal(0))
			return
		}
		if v, ok := s.view(r); ok {
			if src, ok := s.valueOf(inst.Args[1], w); ok && src.known == ^uint64(0) {
				// Flipping known bits keeps them known; flipped loaded
				// bits are no longer copies.
				flip := src.val & widthMask(w)
				v.val ^= flip & v.known
				v.old &^= flip
				s.set(r, v)
				return
			}
		}
	case x86asm.NOT:
		if v, ok := s.view(r); ok {
			v.val = ^v.val
			v.old = 0
			s.set(r, v)
			return
		}
	case x86asm.BTS, x86asm.BTR, x86asm.BTC:
		if imm, ok := inst.Args[1].(x86asm.Imm); ok {
			if v, ok := s.view(r); ok {
				bit := uint64(1) << (uint64(imm) % uint64(8*w))
				switch inst.Op {
				case x86asm.BTS:
					v.known, v.val, v.old = v.known|bit, v.val|bit, v.old&^bit
				case x86asm.BTR:
					v.known, v.val, v.old = v.known|bit, v.val&^bit, v.old&^bit
				default:
					v.val ^= bit & v.known
					v.old &^= bit
				}
				s.set(r, v)
				return
			}
		}
	case x86asm.SHL, x86asm.SHR:
		if imm, ok := inst.Args[1].(x86asm.Imm); ok {
			if v, ok := s.view(r); ok {
				k := uint(uint64(imm) & 63)
				if w < 8 {
					k = uint(uint64(imm) & 31)
				}
				m := widthMask(w)
				if inst.Op == x86asm.SHL {
					v.known = (v.known<<k | (1<<k - 1)) & m
					v.val = (v.val << k) & m
					v.old = (v.old << k) & m
					v.org.bitOff -= int64(k)
				} else {
					v.known = (v.known&m)>>k | ^(m >> k)
					v.val = (v.val & m) >> k
					v.old = (v.old & m) >> k
					v.org.bitOff += int64(k)
				}
				s.set(r, v)
				return
			}
		}
	}
	s.setUnknown(r)
}

// combine is and/or of two abstract values.
func combine(op x86asm.Op, a, b absVal) absVal {
	var out absVal
	aOne, aZero := a.known&a.val, a.known&^a.val
	bOne, bZero := b.known&b.val, b.known&^b.val
	switch op {
	case x86asm.AND:
		zero := aZero | bZero
		one := aOne & bOne
		out.known, out.val = zero|one, one
		// A loaded bit and-ed with a known 1 stays a copy.
		out.old = (a.old&bOne | b.old&aOne) &^ zero
		if a.old&bOne != 0 {
			out.org = a.org
		} else {
			out.org = b.org
		}
	default: // OR
		one := aOne | bOne
		zero := aZero & bZero
		out.known, out.val = zero|one, one
		out.old = (a.old&bZero | b.old&aZero) &^ one
		if a.old&bZero != 0 {
			out.org = a.org
		} else {
			out.org = b.org
		}
	}
	if a.old != 0 && b.old != 0 && a.org != b.org {
		// Loaded bits from two places: keep only a's.
		out.old &= a.old
		out.org = a.org
	}
	return out
}

// stored notes a write of size bytes at m: loaded bits that may come from
// the written bytes are no longer copies of memory.
func (s *regState) stored(m x86asm.Mem, size int) {
	o, ok := memOrigin(m, 0)
	if !ok || size <= 0 {
		if m.Base == x86asm.RSP || m.Base == x86asm.RIP {
			// Stack slots and globals do not alias heap objects
			// reached through a register in the sequences we track.
			return
		}
		s.forgetLoads()
		return
	}
	lo, hi := o.bitOff, o.bitOff+int64(8*size)
	for i := range s.r {
		v := &s.r[i]
		if v.old == 0 {
			continue
		}
		if sameUnit(v.org, o) {
			// Same base: forget only the bits that overlap.
			for b := 0; b < 64; b++ {
				if v.old&(1<<uint(b)) != 0 {
					if mb := int64(b) + v.org.bitOff; mb >= lo && mb < hi {
						v.old &^= 1 << uint(b)
					}
				}
			}
			continue
		}
		v.old = 0
	}
}
