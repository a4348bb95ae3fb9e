package probes

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Cond is a filter evaluated in the BPF program before anything is
// written, so a hit that does not match costs the trap and the reads of
// the filter, nothing more. A comparison whose value cannot be read (a
// NULL pointer on the way) is false.
type Cond interface{ isCond() }

// And is L && R.
type And struct{ L, R Cond }

// Or is L || R.
type Or struct{ L, R Cond }

// Not is !X.
type Not struct{ X Cond }

// Compare compares two integer or pointer operands: ==, !=, <, <=, >, >=.
type Compare struct {
	Op   string
	L, R Operand
}

// StringEquals is true when a string (ngx_str_t, char * or char array)
// equals Literal. Comparing against a literal needs no read loop: its
// length bounds the read.
type StringEquals struct {
	Plan    *symbols.Plan
	Literal string
}

func (And) isCond()          {}
func (Or) isCond()           {}
func (Not) isCond()          {}
func (Compare) isCond()      {}
func (StringEquals) isCond() {}

// Operand is a value read by Plan, or the constant Const when Plan is nil.
type Operand struct {
	Plan   *symbols.Plan
	Const  int64
	Signed bool // compare as signed
}

// Stack slots below the prefix cache, for filters and aggregations. The
// slots a filter's start holds live (the cache, the fault mask, the
// pseudo registers a watch's prologue set) come first; below them is
// scratch: the grouped reads' buffer while the filter starts, then the
// comparisons' right operands, string compares and aggregations.
const (
	slotFaultMask = cacheTop - 8*maxCacheSlots // the filter's failed reads, a bit per group
	slotLeft      = slotFaultMask - 8          // an operand's value
	slotPseudo    = slotLeft - 8               // RegObject; the other pseudo registers below it
	pseudoLowest  = slotPseudo - 8*(RegPrevPoint-RegObject)
	slotRight     = pseudoLowest - 8
	slotString    = slotRight - maxLiteral - 8 // a string compared with a literal
	slotAggValue  = slotString - 8             // the aggregated value
	slotAggInit   = slotAggValue - aggValueSize
	slotSpan      = -512 // the bottom of the stack
	// spanWindow bounds one grouped read: 224 bytes take ngx_connection_t
	// from its read event (8) to its error and timedout bits (224).
	spanWindow = pseudoLowest - slotSpan
)

// filterReadsSaved: a return probe's filter reads an entry argument,
// from the saved-roots map.
func filterReadsSaved(p program, c Cond) bool {
	if !p.isReturn {
		return false
	}
	for _, plan := range condPlans(c, true, nil) {
		if savedRoot(plan) {
			return true
		}
	}
	return false
}

// maxLiteral bounds string literals in filters: they are compared from
// the stack.
const maxLiteral = 64

// cond emits code that jumps to yes or no.
func (e *emitter) cond(p program, c Cond, yes, no string) error {
	switch c := c.(type) {
	case And:
		mid := e.label("and")
		if err := e.cond(p, c.L, mid, no); err != nil {
			return err
		}
		e.mark(mid)
		return e.cond(p, c.R, yes, no)
	case Or:
		mid := e.label("or")
		if err := e.cond(p, c.L, yes, mid); err != nil {
			return err
		}
		e.mark(mid)
		return e.cond(p, c.R, yes, no)
	case Not:
		return e.cond(p, c.X, no, yes)
	case Compare:
		return e.compare(p, c, yes, no)
	case StringEquals:
		return e.stringEquals(p, c, yes, no)
	}
	return fmt.Errorf("unknown condition %T", c)
}

var jumps = map[string][2]asm.JumpOp{
	// unsigned, signed
	"==": {asm.JEq, asm.JEq},
	"!=": {asm.JNE, asm.JNE},
	"<":  {asm.JLT, asm.JSLT},
	"<=": {asm.JLE, asm.JSLE},
	">":  {asm.JGT, asm.JSGT},
	">=": {asm.JGE, asm.JSGE},
}

func (e *emitter) compare(p program, c Compare, yes, no string) error {
	ops, ok := jumps[c.Op]
	if !ok {
		return fmt.Errorf("unknown comparison %q", c.Op)
	}
	op := ops[0]
	if c.L.Signed || c.R.Signed {
		op = ops[1]
	}
	if err := e.operand(p, c.L, slotLeft, no); err != nil {
		return err
	}
	if c.R.Plan != nil {
		if err := e.operand(p, c.R, slotRight, no); err != nil {
			return err
		}
		e.emit(
			asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord),
			asm.LoadMem(asm.R2, asm.RFP, slotRight, asm.DWord),
			op.Reg(asm.R1, asm.R2, yes),
			asm.Ja.Label(no),
		)
		return nil
	}
	e.emit(asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord))
	if c.R.Const == int64(int32(c.R.Const)) {
		e.emit(op.Imm(asm.R1, int32(c.R.Const), yes))
	} else {
		e.emit(asm.LoadImm(asm.R2, c.R.Const, asm.DWord), op.Reg(asm.R1, asm.R2, yes))
	}
	e.emit(asm.Ja.Label(no))
	return nil
}

// operand stores an operand's value, extended to 64 bits, at fp+slot; a
// fault jumps to fault.
func (e *emitter) operand(p program, o Operand, slot int16, fault string) error {
	if o.Plan == nil {
		e.emit(asm.LoadImm(asm.R1, o.Const, asm.DWord), asm.StoreMem(asm.RFP, slot, asm.R1, asm.DWord))
		return nil
	}
	plan := o.Plan
	r := plan.Read
	bits, low := r.BitSize, r.BitOffset
	if e.cachedFinal(plan, fault) {
		if bits == 0 {
			bits = 8 * r.Size
		}
		return e.extend(o, slot, bits, low)
	}
	from := 0
	if plan.Root.Unavailable == "" {
		from = e.cachedBase(plan, fault)
	}
	if from == 0 {
		if _, err := e.root(p, plan, fault); err != nil {
			return err
		}
	}
	for _, off := range plan.Loads[from:] {
		e.readTo(asm.RFP, slot, 8, off, fault)
		e.emit(asm.LoadMem(regBase, asm.RFP, slot, asm.DWord))
	}
	switch r.Kind {
	case symbols.ReadValue:
		// A register holds an int in its low bits; the rest is undefined.
		bits = 64
		if n := plan.Type.Size(); n > 0 && n < 8 {
			bits = int(8 * n)
		}
		e.emit(asm.Mov.Reg(asm.R1, regBase))
	case symbols.ReadMemory:
		if r.Size > 8 {
			return fmt.Errorf("%s: %d bytes is not a number to compare", plan.Expr, r.Size)
		}
		// Zero the slot so that a short read leaves a zero-extended value.
		e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slot, asm.R1, asm.DWord))
		e.readTo(asm.RFP, slot, r.Size, r.Offset, fault)
		if bits == 0 {
			bits = 8 * r.Size
		}
		e.emit(asm.LoadMem(asm.R1, asm.RFP, slot, asm.DWord))
	default:
		return fmt.Errorf("%s is a string: compare it with a string literal", plan.Expr)
	}
	return e.extend(o, slot, bits, low)
}

// extend takes the bits of R1 an operand's value is made of, low first,
// sign- or zero-extended, and stores them at fp+slot.
func (e *emitter) extend(o Operand, slot int16, bits, low int) error {
	if left := 64 - low - bits; left > 0 {
		e.emit(asm.LSh.Imm(asm.R1, int32(left)))
	}
	if right := 64 - bits; right > 0 {
		if o.Signed {
			e.emit(asm.ArSh.Imm(asm.R1, int32(right)))
		} else {
			e.emit(asm.RSh.Imm(asm.R1, int32(right)))
		}
	}
	e.emit(asm.StoreMem(asm.RFP, slot, asm.R1, asm.DWord))
	return nil
}

// root sets regBase to the plan's root value. It reports whether the
// code jumps to noEntry (a return probe without its entry's arguments).
func (e *emitter) root(p program, plan *symbols.Plan, noEntry string) (bool, error) {
	switch {
	case plan.Root.Unavailable != "":
		// The value cannot be located here: go where an unreadable one
		// goes. A conditional jump keeps the code after it reachable
		// for the verifier's CFG check; the constant makes it taken.
		e.emit(
			asm.Mov.Imm(regBase, 0),
			asm.JEq.Imm(regBase, 0, noEntry),
		)
		return true, nil
	case plan.Root.Const:
		e.emit(asm.LoadImm(regBase, plan.Root.Add, asm.DWord))
	case plan.Root.Reg >= RegObject:
		slot, ok := pseudoSlot(plan.Root.Reg)
		if !ok {
			return false, fmt.Errorf("%s: unknown pseudo register %d", plan.Expr, plan.Root.Reg)
		}
		e.emit(asm.LoadMem(regBase, asm.RFP, slot, asm.DWord))
		if plan.Root.Add != 0 {
			e.emit(asm.Add.Imm(regBase, int32(plan.Root.Add)))
		}
	case plan.Root.Return || !p.isReturn:
		off, ok := ptRegsOffset[plan.Root.Reg]
		if !ok {
			return false, fmt.Errorf("%s: register %d has no pt_regs slot", plan.Expr, plan.Root.Reg)
		}
		e.emit(asm.LoadMem(regBase, regCtx, off, asm.DWord))
		if plan.Root.Add != 0 {
			e.emit(asm.Add.Imm(regBase, int32(plan.Root.Add)))
		}
	default:
		i := indexOf(p.savedRoots, rootKey{plan.Root.Reg, plan.Root.Add})
		if i < 0 {
			return false, fmt.Errorf("%s: root not saved at entry", plan.Expr)
		}
		e.emit(
			asm.JEq.Imm(regSaved, 0, noEntry),
			asm.LoadMem(regBase, regSaved, int16(8*i), asm.DWord),
		)
		return true, nil
	}
	return false, nil
}

// Pseudo registers are roots a watch or diff program computes before its
// values: plans read them from stack slots as if from registers.
const (
	RegObject    = 100 + iota // the object whose field is watched (its connection)
	RegSite                   // the index of the write site or probe point
	RegOld                    // the field's value before
	RegNew                    // and after
	RegPrevPoint              // the probe point that saw the old value (diff mode)
)

func pseudoSlot(reg int) (int16, bool) {
	if reg < RegObject || reg > RegPrevPoint {
		return 0, false
	}
	return slotPseudo - int16(8*(reg-RegObject)), true
}

// readTo reads size bytes at regBase+off into ptr+dst, or jumps to fault.
func (e *emitter) readTo(ptr asm.Register, dst int16, size int, off int64, fault string) {
	e.emit(
		asm.JLT.Imm(regBase, nullPage, fault),
		asm.Mov.Reg(asm.R1, ptr),
		asm.Add.Imm(asm.R1, int32(dst)),
		asm.Mov.Imm(asm.R2, int32(size)),
		asm.Mov.Reg(asm.R3, regBase),
	)
	if off != 0 {
		e.emit(asm.Add.Imm(asm.R3, int32(off)))
	}
	e.emit(
		asm.FnProbeReadUser.Call(),
		asm.JNE.Imm(asm.R0, 0, fault),
	)
}

func (e *emitter) stringEquals(p program, c StringEquals, yes, no string) error {
	lit := c.Literal
	if len(lit) > maxLiteral-1 {
		return fmt.Errorf("string literal of %d bytes: at most %d can be compared", len(lit), maxLiteral-1)
	}
	plan := c.Plan
	if _, err := e.root(p, plan, no); err != nil {
		return err
	}
	for _, off := range plan.Loads {
		e.readTo(asm.RFP, slotLeft, 8, off, no)
		e.emit(asm.LoadMem(regBase, asm.RFP, slotLeft, asm.DWord))
	}
	n := len(lit)
	r := plan.Read
	switch r.Kind {
	case symbols.ReadNgxStr:
		// len must match, then the bytes at data.
		e.readTo(asm.RFP, slotLeft, 8, r.Offset, no)
		e.emit(
			asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord),
			asm.JNE.Imm(asm.R1, int32(n), no),
		)
		if n == 0 {
			e.emit(asm.Ja.Label(yes))
			return nil
		}
		e.readTo(asm.RFP, slotLeft, 8, r.Offset+8, no)
		e.emit(asm.LoadMem(regBase, asm.RFP, slotLeft, asm.DWord))
		e.readTo(asm.RFP, slotString, n, 0, no)
	case symbols.ReadCString:
		// The string and its NUL: bpf_probe_read_user_str returns n+1
		// exactly when the string is the literal's length.
		e.emit(
			asm.JLT.Imm(regBase, nullPage, no),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, slotString),
			asm.Mov.Imm(asm.R2, int32(n+2)),
			asm.Mov.Reg(asm.R3, regBase),
			asm.FnProbeReadUserStr.Call(),
			asm.JNE.Imm(asm.R0, int32(n+1), no),
		)
	case symbols.ReadMemory: // a char array
		if n > r.Size {
			e.emit(asm.Ja.Label(no))
			return nil
		}
		size := min(n+1, r.Size)
		e.readTo(asm.RFP, slotString, size, r.Offset, no)
		if size > n {
			e.emit(
				asm.LoadMem(asm.R1, asm.RFP, slotString+int16(n), asm.Byte),
				asm.JNE.Imm(asm.R1, 0, no),
			)
		}
	default:
		return fmt.Errorf("%s is not a string", plan.Expr)
	}
	// Compare 8, 4, 2 and 1 bytes at a time against the literal.
	for i := 0; i < n; {
		size, w := chunk(n - i)
		var v int64
		for k := size - 1; k >= 0; k-- {
			v = v<<8 | int64(lit[i+k])
		}
		e.emit(asm.LoadMem(asm.R1, asm.RFP, slotString+int16(i), w))
		// An imm32 is sign-extended: wide or high-bit chunks go through a register.
		if size == 8 || v >= 1<<31 {
			e.emit(asm.LoadImm(asm.R2, v, asm.DWord), asm.JNE.Reg(asm.R1, asm.R2, no))
		} else {
			e.emit(asm.JNE.Imm(asm.R1, int32(uint32(v)), no))
		}
		i += size
	}
	e.emit(asm.Ja.Label(yes))
	return nil
}

func chunk(left int) (int, asm.Size) {
	switch {
	case left >= 8:
		return 8, asm.DWord
	case left >= 4:
		return 4, asm.Word
	case left >= 2:
		return 2, asm.Half
	}
	return 1, asm.Byte
}
