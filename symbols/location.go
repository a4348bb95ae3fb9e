package symbols

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"fmt"
)

// LocationKind says how a parameter's value is found at function entry.
type LocationKind int

const (
	// InRegister: the value is register Reg.
	InRegister LocationKind = iota
	// InMemory: the value is in memory at Reg + Offset.
	InMemory
	// RegisterPlusOffset: the value is Reg + Offset (DW_OP_bregN; DW_OP_stack_value).
	RegisterPlusOffset
	// Constant: the value is Offset.
	Constant
)

// Location is where a value lives at the entry of a function instance.
type Location struct {
	Kind   LocationKind
	Reg    int
	Offset int64
}

func (l Location) String() string {
	reg := RegName(l.Reg)
	switch l.Kind {
	case InRegister:
		return reg
	case InMemory:
		return fmt.Sprintf("[%s%+d]", reg, l.Offset)
	case RegisterPlusOffset:
		return fmt.Sprintf("%s%+d", reg, l.Offset)
	default:
		return fmt.Sprintf("const %d", l.Offset)
	}
}

// Param is a formal parameter of one function instance.
type Param struct {
	Name     string
	Type     dwarf.Type
	Location Location
	// Err is set when the location cannot be used at entry (optimized
	// out, removed by a clone, split into pieces).
	Err error
}

// Params returns the parameters of an instance with their entry locations.
func (b *Binary) Params(fn *Function) ([]Param, error) {
	return b.params(fn, fn.Address)
}

func (b *Binary) params(fn *Function, pc uint64) ([]Param, error) {
	if b.dwarf == nil {
		return nil, fmt.Errorf("%s: %w: %s", fn.Symbol, ErrNoDebugInfo, NoDebugInfoHint)
	}
	die, _ := b.subprogram(fn)
	if die == 0 {
		return nil, fmt.Errorf("%s at %#x: no DWARF subprogram for this instance", fn.Symbol, fn.Address)
	}
	r := b.dwarf.Reader()
	r.Seek(die)
	sp, err := r.Next()
	if err != nil || sp == nil {
		return nil, fmt.Errorf("%s: reading DWARF at %#x: %w", fn.Symbol, die, orNoEntry(err))
	}
	cfaOffset, fbErr := frameBase(sp)
	if pc != fn.Address {
		fbErr = errMidFunctionFrame
	}
	var params []Param
	seen := map[string]bool{}
	if sp.Children {
		for {
			e, err := r.Next()
			if err != nil {
				return nil, err
			}
			if e == nil || e.Tag == 0 {
				break
			}
			if e.Tag == dwarf.TagFormalParameter {
				p := b.param(fn, pc, e, cfaOffset, fbErr)
				seen[p.Name] = true
				params = append(params, p)
			}
			if e.Children {
				r.SkipChildren()
			}
		}
	}
	// A clone drops parameters it does not use: list them as unavailable
	// so that the user learns why an argument is missing.
	if origin, ok := sp.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
		for _, p := range b.originParams(origin) {
			if !seen[p.Name] {
				p.Err = fmt.Errorf("parameter %s of %s: %w (removed or optimized out in this instance)", p.Name, fn.Symbol, ErrNoLocation)
				params = append(params, p)
			}
		}
	}
	return params, nil
}

func (b *Binary) originParams(off dwarf.Offset) []Param {
	r := b.dwarf.Reader()
	r.Seek(off)
	e, err := r.Next()
	if err != nil || e == nil || !e.Children {
		return nil
	}
	var out []Param
	for {
		c, err := r.Next()
		if err != nil || c == nil || c.Tag == 0 {
			return out
		}
		if c.Tag == dwarf.TagFormalParameter {
			name, _ := c.Val(dwarf.AttrName).(string)
			p := Param{Name: name}
			if t, ok := c.Val(dwarf.AttrType).(dwarf.Offset); ok {
				p.Type, _ = b.dwarf.Type(t)
			}
			out = append(out, p)
		}
		if c.Children {
			r.SkipChildren()
		}
	}
}

// Attr reads an attribute from the entry or, failing that, from the entry
// it refines: its abstract origin (clones, out-of-line and inlined copies
// keep names and types there) or its specification.
func (b *Binary) Attr(e *dwarf.Entry, a dwarf.Attr) any {
	for range 4 {
		if v := e.Val(a); v != nil {
			return v
		}
		origin, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
		if !ok {
			origin, ok = e.Val(dwarf.AttrSpecification).(dwarf.Offset)
		}
		if !ok {
			return nil
		}
		r := b.dwarf.Reader()
		r.Seek(origin)
		next, err := r.Next()
		if err != nil || next == nil {
			return nil
		}
		e = next
	}
	return nil
}

func (b *Binary) param(fn *Function, pc uint64, e *dwarf.Entry, cfaOffset int64, fbErr error) Param {
	return b.paramIn(paramSite{unit: fn.unit, who: fn.Symbol, pc: pc, mid: pc != fn.Address, cfaOffset: cfaOffset, fbErr: fbErr}, e)
}

// paramSite is where a parameter is located: at pc, in the code of a
// unit, as a parameter of who (named in errors). mid says pc is not the
// entry of the function whose registers the probe sees.
type paramSite struct {
	unit      *unit
	who       string
	pc        uint64
	mid       bool
	cfaOffset int64
	fbErr     error
	// consts accepts DW_AT_const_value (inlined copies; an out-of-line
	// instance's constant parameters are reported as optimized out).
	consts bool
}

func (b *Binary) paramIn(at paramSite, e *dwarf.Entry) Param {
	p := Param{}
	p.Name, _ = b.Attr(e, dwarf.AttrName).(string)
	if t, ok := b.Attr(e, dwarf.AttrType).(dwarf.Offset); ok {
		p.Type, _ = b.dwarf.Type(t)
	}
	pc := at.pc
	fail := func(why string) Param {
		p.Err = fmt.Errorf("parameter %s of %s at %#x: %w: %s", p.Name, at.who, pc, ErrNoLocation, why)
		return p
	}
	f := e.AttrField(dwarf.AttrLocation)
	if f == nil {
		// A parameter GCC knows to be a constant throughout the
		// inlined copy (a call with a literal argument).
		if v, ok := constValue(e.AttrField(dwarf.AttrConstValue)); ok && at.consts {
			p.Location = Location{Kind: Constant, Offset: v}
			return p
		}
		return fail("optimized out (no DW_AT_location)")
	}
	var expr []byte
	switch f.Class {
	case dwarf.ClassExprLoc:
		expr = f.Val.([]byte)
	case dwarf.ClassLocListPtr, dwarf.ClassLocList:
		// A section offset is an int64; a DW_FORM_loclistx index, a
		// uint64 (debug/dwarf's types for the two).
		off, ok := locListOffset(f.Val)
		if !ok {
			return fail(fmt.Sprintf("location list value %v (%T)", f.Val, f.Val))
		}
		var err error
		expr, err = b.locListAt(at.unit, off, f.Class == dwarf.ClassLocList, pc)
		if err != nil {
			return fail(err.Error())
		}
		if expr == nil {
			return fail("no location list entry covers the address (optimized out here)")
		}
	default:
		return fail(fmt.Sprintf("unsupported location class %v", f.Class))
	}
	if at.mid {
		if err := checkMidFunction(expr); err != nil {
			return fail(err.Error())
		}
	}
	loc, err := decodeEntryExpr(expr, at.cfaOffset, at.fbErr)
	if err != nil {
		return fail(err.Error())
	}
	p.Location = loc
	return p
}

// constValue reads a DW_AT_const_value that fits in 64 bits.
func constValue(f *dwarf.Field) (int64, bool) {
	if f == nil {
		return 0, false
	}
	switch v := f.Val.(type) {
	case int64:
		return v, true
	case uint64:
		return int64(v), true
	case []byte:
		if len(v) == 0 || len(v) > 8 {
			return 0, false
		}
		var buf [8]byte
		copy(buf[:], v)
		return int64(binary.LittleEndian.Uint64(buf[:])), true
	}
	return 0, false
}

// frameBase returns the offset from rsp of the frame base at entry. GCC
// uses DW_OP_call_frame_cfa, which at entry is rsp+8 (the return address).
func frameBase(sp *dwarf.Entry) (int64, error) {
	fb, ok := sp.Val(dwarf.AttrFrameBase).([]byte)
	if !ok {
		return 8, nil
	}
	if len(fb) == 1 && fb[0] == opCallFrameCFA {
		return 8, nil
	}
	if len(fb) >= 1 && fb[0] == opBreg0+RegRSP {
		off, _ := sleb(bytes.NewReader(fb[1:]))
		return off, nil
	}
	return 0, fmt.Errorf("unsupported frame base % x", fb)
}

const (
	opAddr         = 0x03
	opConst1u      = 0x08
	opConst1s      = 0x09
	opConst2u      = 0x0a
	opConst2s      = 0x0b
	opConst4u      = 0x0c
	opConst4s      = 0x0d
	opConst8u      = 0x0e
	opConst8s      = 0x0f
	opConstu       = 0x10
	opConsts       = 0x11
	opLit0         = 0x30
	opReg0         = 0x50
	opBreg0        = 0x70
	opRegx         = 0x90
	opFbreg        = 0x91
	opBregx        = 0x92
	opPiece        = 0x93
	opCallFrameCFA = 0x9c
	opStackValue   = 0x9f
	opEntryValue   = 0xa3
	opGNUEntryVal  = 0xf3
)

// decodeEntryExpr interprets the location expressions GCC emits for
// parameters at a function's entry. At the entry PC, DW_OP_entry_value(X)
// is X itself, which is why we can accept it.
func decodeEntryExpr(expr []byte, cfaOffset int64, fbErr error) (Location, error) {
	r := bytes.NewReader(expr)
	op, err := r.ReadByte()
	if err != nil {
		return Location{}, errors.New("empty location expression (optimized out)")
	}
	var loc Location
	switch {
	case op >= opReg0 && op < opReg0+32:
		loc = Location{Kind: InRegister, Reg: int(op - opReg0)}
	case op == opRegx:
		n, _ := uleb(r)
		loc = Location{Kind: InRegister, Reg: int(n)}
	case op >= opBreg0 && op < opBreg0+32:
		off, _ := sleb(r)
		loc = Location{Kind: InMemory, Reg: int(op - opBreg0), Offset: off}
	case op == opBregx:
		n, _ := uleb(r)
		off, _ := sleb(r)
		loc = Location{Kind: InMemory, Reg: int(n), Offset: off}
	case op == opFbreg:
		if fbErr != nil {
			return Location{}, fbErr
		}
		off, _ := sleb(r)
		loc = Location{Kind: InMemory, Reg: RegRSP, Offset: cfaOffset + off}
	case op == opEntryValue || op == opGNUEntryVal:
		n, _ := uleb(r)
		// Check the length first: a short read is no error for a
		// bytes.Reader, and a corrupt length must not size the buffer.
		if n > uint64(r.Len()) {
			return Location{}, errors.New("truncated DW_OP_entry_value")
		}
		sub := make([]byte, n)
		r.Read(sub)
		inner, err := decodeEntryExpr(sub, cfaOffset, fbErr)
		if err != nil {
			return Location{}, err
		}
		if inner.Kind != InRegister {
			return Location{}, fmt.Errorf("DW_OP_entry_value of %s is not supported", inner)
		}
		// entry_value(reg) is the register's value at entry: a value, not a location.
		loc = inner
		if next, err := r.ReadByte(); err == nil && next != opStackValue {
			return Location{}, fmt.Errorf("unsupported operation %#x after DW_OP_entry_value", next)
		}
		return loc, nil
	case op >= opLit0 && op < opLit0+32:
		loc = Location{Kind: Constant, Offset: int64(op - opLit0)}
	case op >= opConst1u && op <= opConsts:
		v, err := readConst(op, r)
		if err != nil {
			return Location{}, err
		}
		loc = Location{Kind: Constant, Offset: v}
	case op == opAddr:
		return Location{}, errors.New("the value lives in a global (DW_OP_addr), not in an argument")
	default:
		return Location{}, fmt.Errorf("unsupported DWARF operation %#x", op)
	}
	next, err := r.ReadByte()
	if err != nil {
		if loc.Kind == Constant {
			return Location{}, errors.New("constant without DW_OP_stack_value")
		}
		return loc, nil
	}
	switch next {
	case opStackValue:
		if loc.Kind == InMemory {
			loc.Kind = RegisterPlusOffset
		}
		return loc, nil
	case opPiece:
		size, _ := uleb(r)
		if r.Len() == 0 && size >= 8 {
			return loc, nil
		}
		return Location{}, fmt.Errorf("value split into pieces (DW_OP_piece %d), as a clone passes parts of a struct", size)
	}
	return Location{}, fmt.Errorf("unsupported DWARF operation %#x after %s", next, loc)
}

func readConst(op byte, r *bytes.Reader) (int64, error) {
	var sz int
	switch op {
	case opConst1u, opConst1s:
		sz = 1
	case opConst2u, opConst2s:
		sz = 2
	case opConst4u, opConst4s:
		sz = 4
	case opConst8u, opConst8s:
		sz = 8
	case opConstu:
		v, err := uleb(r)
		return int64(v), err
	case opConsts:
		return sleb(r)
	}
	buf := make([]byte, 8)
	if _, err := r.Read(buf[:sz]); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(buf)
	if op%2 == 1 { // signed variants are odd
		shift := 64 - 8*sz
		return int64(v<<shift) >> shift, nil
	}
	return int64(v), nil
}

// Location list entry kinds (DWARF 5, section 7.29), and GCC's view pair.
const (
	lleEndOfList    = 0x00
	lleBaseAddressx = 0x01
	lleStartxEndx   = 0x02
	lleStartxLength = 0x03
	lleOffsetPair   = 0x04
	lleDefault      = 0x05
	lleBaseAddress  = 0x06
	lleStartEnd     = 0x07
	lleStartLength  = 0x08
	lleGNUViewPair  = 0x09
)

// locListAt returns the expression of the location list entry covering pc.
func (b *Binary) locListAt(u *unit, off uint64, indexed bool, pc uint64) ([]byte, error) {
	if u == nil {
		return nil, errors.New("no compile unit for this instance")
	}
	if u.version < 5 {
		return b.loc4At(u, off, pc)
	}
	data := b.sections.loclists
	if indexed {
		// DW_FORM_loclistx: an index into the offsets table at loclists_base.
		at := u.locBase + off*4
		if off > uint64(len(data))/4 || at < u.locBase || !within(at, 4, data) {
			return nil, fmt.Errorf("loclistx %d out of range", off)
		}
		off = u.locBase + uint64(binary.LittleEndian.Uint32(data[at:]))
	}
	if off >= uint64(len(data)) {
		return nil, fmt.Errorf("location list offset %#x out of range", off)
	}
	r := bytes.NewReader(data[off:])
	base := u.base
	var deflt []byte
	if u.addrSize < 1 || u.addrSize > 8 {
		return nil, fmt.Errorf("address size %d", u.addrSize)
	}
	readAddr := func() (uint64, error) {
		buf := make([]byte, 8)
		if _, err := r.Read(buf[:u.addrSize]); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(buf), nil
	}
	readExpr := func() ([]byte, error) {
		n, err := uleb(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, errors.New("truncated location list")
		}
		e := make([]byte, n)
		r.Read(e)
		return e, nil
	}
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return nil, errors.New("truncated location list")
		}
		var start, end uint64
		switch kind {
		case lleEndOfList:
			return deflt, nil
		case lleBaseAddressx:
			i, _ := uleb(r)
			if base, err = b.debugAddr(u, i); err != nil {
				return nil, err
			}
			continue
		case lleBaseAddress:
			if base, err = readAddr(); err != nil {
				return nil, err
			}
			continue
		case lleGNUViewPair:
			uleb(r)
			uleb(r)
			continue
		case lleDefault:
			if deflt, err = readExpr(); err != nil {
				return nil, err
			}
			continue
		case lleStartxEndx:
			i, _ := uleb(r)
			j, _ := uleb(r)
			if start, err = b.debugAddr(u, i); err != nil {
				return nil, err
			}
			if end, err = b.debugAddr(u, j); err != nil {
				return nil, err
			}
		case lleStartxLength:
			i, _ := uleb(r)
			n, _ := uleb(r)
			if start, err = b.debugAddr(u, i); err != nil {
				return nil, err
			}
			end = start + n
		case lleOffsetPair:
			s, _ := uleb(r)
			e, _ := uleb(r)
			start, end = base+s, base+e
		case lleStartEnd:
			start, _ = readAddr()
			end, _ = readAddr()
		case lleStartLength:
			start, _ = readAddr()
			n, _ := uleb(r)
			end = start + n
		default:
			return nil, fmt.Errorf("unknown location list entry kind %#x", kind)
		}
		expr, err := readExpr()
		if err != nil {
			return nil, err
		}
		if pc >= start && pc < end {
			return expr, nil
		}
	}
}

func (b *Binary) debugAddr(u *unit, i uint64) (uint64, error) {
	at := u.addrBase + i*uint64(u.addrSize)
	if u.addrSize < 1 || u.addrSize > 8 || i > uint64(len(b.sections.addr)) || at < u.addrBase || !within(at, uint64(u.addrSize), b.sections.addr) {
		return 0, fmt.Errorf(".debug_addr index %d out of range", i)
	}
	var buf [8]byte
	copy(buf[:], b.sections.addr[at:at+uint64(u.addrSize)])
	return binary.LittleEndian.Uint64(buf[:]), nil
}

// loc4At reads a DWARF 2-4 .debug_loc list.
func (b *Binary) loc4At(u *unit, off, pc uint64) ([]byte, error) {
	data := b.sections.loc
	base := u.base
	for {
		if !within(off, 16, data) {
			return nil, fmt.Errorf(".debug_loc offset %#x out of range", off)
		}
		start := binary.LittleEndian.Uint64(data[off:])
		end := binary.LittleEndian.Uint64(data[off+8:])
		off += 16
		if start == 0 && end == 0 {
			return nil, nil
		}
		if start == ^uint64(0) {
			base = end
			continue
		}
		if !within(off, 2, data) {
			return nil, errors.New("truncated .debug_loc")
		}
		n := uint64(binary.LittleEndian.Uint16(data[off:]))
		off += 2
		if !within(off, n, data) {
			return nil, errors.New("truncated .debug_loc")
		}
		if pc >= base+start && pc < base+end {
			return data[off : off+n], nil
		}
		off += n
	}
}

func uleb(r *bytes.Reader) (uint64, error) {
	var v uint64
	var shift uint
	for {
		c, err := r.ReadByte()
		if err != nil {
			return v, err
		}
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v, nil
		}
	}
}

func sleb(r *bytes.Reader) (int64, error) {
	var v int64
	var shift uint
	for {
		c, err := r.ReadByte()
		if err != nil {
			return v, err
		}
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
	}
}

// Location returns the location expression of the variable or parameter
// e, of the compile unit cu, at pc: its DW_AT_location expression, or the
// entry of its location list that covers pc (nil when none does).
func (b *Binary) Location(cu, e *dwarf.Entry, pc uint64) ([]byte, error) {
	f := e.AttrField(dwarf.AttrLocation)
	if f == nil {
		return nil, nil
	}
	switch f.Class {
	case dwarf.ClassExprLoc:
		v, _ := f.Val.([]byte)
		return v, nil
	case dwarf.ClassLocListPtr, dwarf.ClassLocList:
		off, ok := locListOffset(f.Val)
		if !ok {
			return nil, nil
		}
		u, err := b.unitOf(cu)
		if err != nil {
			return nil, err
		}
		return b.locListAt(u, off, f.Class == dwarf.ClassLocList, pc)
	}
	return nil, fmt.Errorf("unsupported location class %v", f.Class)
}

// unitOf returns what location lists need of the unit cu, indexing it
// if it was not yet.
func (b *Binary) unitOf(cu *dwarf.Entry) (*unit, error) {
	ix, err := b.idx()
	if err != nil {
		return nil, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err := b.scanUnit(ix, cu.Offset); err != nil {
		return nil, err
	}
	u := ix.units[cu.Offset]
	if u == nil {
		return nil, fmt.Errorf("no compile unit at %#x", cu.Offset)
	}
	return u, nil
}

// RegisterValue decodes a location that says a value is a register plus
// a constant where it holds: DW_OP_regN, DW_OP_regx N, or DW_OP_bregN k;
// DW_OP_stack_value. Other locations (memory, pieces, entry values) are
// not register values, and ok is false.
func RegisterValue(expr []byte) (reg int, add int64, ok bool) {
	if len(expr) == 0 || expr[0] == opEntryValue || expr[0] == opGNUEntryVal {
		return 0, 0, false
	}
	loc, err := decodeEntryExpr(expr, 0, errMidFunctionFrame)
	if err != nil {
		return 0, 0, false
	}
	switch loc.Kind {
	case InRegister:
		return loc.Reg, 0, true
	case RegisterPlusOffset:
		return loc.Reg, loc.Offset, true
	}
	return 0, 0, false
}

// locListOffset is a location list attribute's value: an int64 section
// offset, or a uint64 DW_FORM_loclistx index.
func locListOffset(v any) (uint64, bool) {
	switch v := v.(type) {
	case int64:
		return uint64(v), true
	case uint64:
		return v, true
	}
	return 0, false
}

// within reports whether n bytes at off lie inside data, without the
// wrap-around of off+n.
func within(off, n uint64, data []byte) bool {
	return off <= uint64(len(data)) && n <= uint64(len(data))-off
}
