package symbols

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A small walker over raw .debug_info and .debug_abbrev bytes: it knows
// the size of every DWARF 2-5 form and of the GNU ones, so that it can
// find, and rewrite in place, the values that point into other sections.
// debug/dwarf decodes entries but cannot change them; merging a dwz
// supplementary file (altlink.go) needs exactly that. Every read is
// checked: a malformed section is an error that says where, never a panic.

// DWARF form codes (DWARF 5 section 7.5.6, and the GNU extensions).
const (
	formAddr          = 0x01
	formBlock2        = 0x03
	formBlock4        = 0x04
	formData2         = 0x05
	formData4         = 0x06
	formData8         = 0x07
	formString        = 0x08
	formBlock         = 0x09
	formBlock1        = 0x0a
	formData1         = 0x0b
	formFlag          = 0x0c
	formSdata         = 0x0d
	formStrp          = 0x0e
	formUdata         = 0x0f
	formRefAddr       = 0x10
	formRef1          = 0x11
	formRef2          = 0x12
	formRef4          = 0x13
	formRef8          = 0x14
	formRefUdata      = 0x15
	formIndirect      = 0x16
	formSecOffset     = 0x17
	formExprloc       = 0x18
	formFlagPresent   = 0x19
	formStrx          = 0x1a
	formAddrx         = 0x1b
	formRefSup4       = 0x1c
	formStrpSup       = 0x1d
	formData16        = 0x1e
	formLineStrp      = 0x1f
	formRefSig8       = 0x20
	formImplicitConst = 0x21
	formLoclistx      = 0x22
	formRnglistx      = 0x23
	formRefSup8       = 0x24
	formStrx1         = 0x25
	formStrx2         = 0x26
	formStrx3         = 0x27
	formStrx4         = 0x28
	formAddrx1        = 0x29
	formAddrx2        = 0x2a
	formAddrx3        = 0x2b
	formAddrx4        = 0x2c
	formGNUAddrIndex  = 0x1f01
	formGNUStrIndex   = 0x1f02
	formGNURefAlt     = 0x1f20 // DWARF 4 dwz: offset in the supplementary .debug_info
	formGNUStrpAlt    = 0x1f21 // DWARF 4 dwz: offset in the supplementary .debug_str
)

const (
	attrStmtList     = 0x10
	maxIndirectForms = 4 // DW_FORM_indirect naming DW_FORM_indirect, at most
)

// dwarfCursor reads a section: every read is bounds-checked, and the first
// failure sticks in err (later reads return zero), as with debug/dwarf's buf.
type dwarfCursor struct {
	section string
	data    []byte
	off     int
	order   binary.ByteOrder
	err     error
}

func (c *dwarfCursor) fail(at int, format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%s at %#x: %s", c.section, at, fmt.Sprintf(format, args...))
	}
}

// take returns the next n bytes, or nil after recording that they are not
// there.
func (c *dwarfCursor) take(n uint64, what string) []byte {
	if c.err != nil {
		return nil
	}
	if c.off > len(c.data) || n > uint64(len(c.data)-c.off) {
		c.fail(c.off, "%s: %d bytes wanted, %d left", what, n, max(len(c.data)-c.off, 0))
		return nil
	}
	b := c.data[c.off : c.off+int(n)]
	c.off += int(n)
	return b
}

// uint reads an n-byte unsigned integer (n is 1, 2, 3, 4 or 8).
func (c *dwarfCursor) uint(n int, what string) uint64 {
	b := c.take(uint64(n), what)
	if b == nil {
		return 0
	}
	return getUint(c.order, b)
}

func (c *dwarfCursor) uleb(what string) uint64 {
	v, n := readULEB(c.data[min(c.off, len(c.data)):])
	if c.err == nil && n <= 0 {
		c.fail(c.off, "%s: bad or truncated LEB128", what)
	}
	if c.err != nil {
		return 0
	}
	c.off += n
	return v
}

// skipLEB skips a signed or unsigned LEB128 number.
func (c *dwarfCursor) skipLEB(what string) {
	for i := c.off; c.err == nil && i < len(c.data) && i-c.off < 16; i++ {
		if c.data[i]&0x80 == 0 {
			c.off = i + 1
			return
		}
	}
	c.fail(c.off, "%s: bad or truncated LEB128", what)
}

// cstring skips a NUL-terminated string.
func (c *dwarfCursor) cstring(what string) {
	if c.err != nil {
		return
	}
	for i := c.off; i < len(c.data); i++ {
		if c.data[i] == 0 {
			c.off = i + 1
			return
		}
	}
	c.fail(c.off, "%s: string without its NUL", what)
}

// readULEB decodes an unsigned LEB128 number: its value and length, or
// n = 0 when it is truncated and n = -1 when it overflows 64 bits.
func readULEB(b []byte) (v uint64, n int) {
	var shift uint
	for i, x := range b {
		if shift >= 64 && x&0x7f != 0 || shift == 63 && x&0x7f > 1 {
			return 0, -1
		}
		if shift < 64 {
			v |= uint64(x&0x7f) << shift
		}
		shift += 7
		if x&0x80 == 0 {
			return v, i + 1
		}
		if i >= 16 {
			return 0, -1 // no sane number is this long
		}
	}
	return 0, 0
}

// putULEBPadded writes v over dst as an LEB128 number of exactly len(dst)
// bytes (non-minimal encodings are valid DWARF, and debug/dwarf reads
// them); false when v needs more bytes.
func putULEBPadded(dst []byte, v uint64) bool {
	for i := range dst {
		b := byte(v & 0x7f)
		v >>= 7
		if i < len(dst)-1 {
			b |= 0x80
		}
		dst[i] = b
	}
	return v == 0 && len(dst) > 0
}

func getUint(order binary.ByteOrder, b []byte) uint64 {
	switch len(b) {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(order.Uint16(b))
	case 3:
		if order == binary.BigEndian {
			return uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])
		}
		return uint64(b[2])<<16 | uint64(b[1])<<8 | uint64(b[0])
	case 4:
		return uint64(order.Uint32(b))
	case 8:
		return order.Uint64(b)
	}
	return 0
}

// putUint writes v into b (4 or 8 bytes); false when it does not fit.
func putUint(order binary.ByteOrder, b []byte, v uint64) bool {
	switch len(b) {
	case 4:
		if v > math.MaxUint32 {
			return false
		}
		order.PutUint32(b, uint32(v))
	case 8:
		order.PutUint64(b, v)
	default:
		return false
	}
	return true
}

// unitHeader is one unit of .debug_info.
type unitHeader struct {
	off      int // its first byte (the unit_length field)
	end      int // one past its last byte
	dwarf64  bool
	version  int
	addrSize int
	abbrevAt int // where its debug_abbrev_offset is stored
	abbrev   uint64
}

func (u *unitHeader) offsetSize() int {
	if u.dwarf64 {
		return 8
	}
	return 4
}

// readUnitLength reads an initial length: the end of the unit and whether
// it is 64-bit DWARF.
func readUnitLength(c *dwarfCursor) (end int, dwarf64 bool) {
	at := c.off
	n := c.uint(4, "unit length")
	if n == 0xffffffff {
		dwarf64 = true
		n = c.uint(8, "64-bit unit length")
	} else if n >= 0xfffffff0 {
		c.fail(at, "reserved unit length %#x", n)
	}
	if c.err == nil && n > uint64(len(c.data)-c.off) {
		c.fail(at, "unit length %#x runs past the end of the section (%#x bytes left)", n, len(c.data)-c.off)
	}
	if c.err != nil {
		return 0, false
	}
	return c.off + int(n), dwarf64
}

// readUnitHeader reads the header of the unit at c.off and leaves c at its
// first entry.
func readUnitHeader(c *dwarfCursor) (unitHeader, error) {
	u := unitHeader{off: c.off}
	u.end, u.dwarf64 = readUnitLength(c)
	if c.err != nil {
		return u, c.err
	}
	// The header's own reads must stay inside the unit.
	whole := c.data
	c.data = c.data[:u.end]
	defer func() { c.data = whole }()
	u.version = int(c.uint(2, "unit version"))
	if c.err == nil && (u.version < 2 || u.version > 5) {
		c.fail(u.off, "unit version %d, want 2 to 5", u.version)
	}
	unitType := uint64(1) // DW_UT_compile
	if u.version >= 5 {
		unitType = c.uint(1, "unit type")
		u.addrSize = int(c.uint(1, "address size"))
	}
	u.abbrevAt = c.off
	u.abbrev = c.uint(u.offsetSize(), "abbreviation offset")
	if u.version < 5 {
		u.addrSize = int(c.uint(1, "address size"))
	}
	switch unitType {
	case 1, 3: // DW_UT_compile, DW_UT_partial
	case 4, 5: // DW_UT_skeleton, DW_UT_split_compile: dwo_id
		c.take(8, "unit id")
	case 2, 6: // DW_UT_type, DW_UT_split_type: signature and type offset
		c.take(8, "type signature")
		c.take(uint64(u.offsetSize()), "type offset")
	default:
		c.fail(u.off, "unit type %#x", unitType)
	}
	if c.err == nil && u.addrSize != 1 && u.addrSize != 2 && u.addrSize != 4 && u.addrSize != 8 {
		c.fail(u.off, "address size %d", u.addrSize)
	}
	return u, c.err
}

// abbrevAttr is an attribute specification, with where its form code is
// in .debug_abbrev so that the code can be rewritten. Codes past 32 bits
// are clamped: to an unknown form, and to an attribute of no interest.
type abbrevAttr struct {
	attr, form uint32
	formAt     uint32
	formLen    uint8
	act        valueAction // set for the file's role by patchUnits
}

// abbrevTable is one table of .debug_abbrev (the one at an offset that
// units name in their header). attrs holds the specifications of every
// declaration, one after the other; codes are dense in practice, so the
// low ones index a slice and any other a map.
type abbrevTable struct {
	attrs []abbrevAttr
	low   []abbrevSpan
	high  map[uint64]abbrevSpan
	// formats records the unit formats that use the table: bit 0 for
	// 32-bit DWARF, bit 1 for 64-bit.
	formats int
}

// abbrevSpan is where a declaration's specifications are in attrs.
type abbrevSpan struct {
	start, end int
	ok         bool
}

func (t *abbrevTable) decl(code uint64) ([]abbrevAttr, bool) {
	var sp abbrevSpan
	if code < uint64(len(t.low)) {
		sp = t.low[code]
	} else {
		sp = t.high[code]
	}
	return t.attrs[sp.start:sp.end], sp.ok
}

func clamp32(v uint64) uint32 { return uint32(min(v, math.MaxUint32)) }

// readAbbrevTable reads the table at off of .debug_abbrev.
func readAbbrevTable(data []byte, off uint64, order binary.ByteOrder) (*abbrevTable, error) {
	if off >= uint64(len(data)) || len(data) > math.MaxUint32 {
		return nil, fmt.Errorf(".debug_abbrev: table offset %#x past the end of the section (%#x bytes)", off, len(data))
	}
	c := &dwarfCursor{section: ".debug_abbrev", data: data, off: int(off), order: order}
	t := &abbrevTable{}
	for c.err == nil {
		at := c.off
		code := c.uleb("abbreviation code")
		if code == 0 || c.err != nil {
			break
		}
		c.uleb("tag")
		c.take(1, "children flag")
		sp := abbrevSpan{start: len(t.attrs), ok: true}
		for c.err == nil {
			attr := c.uleb("attribute")
			formAt := c.off
			form := c.uleb("form")
			if attr == 0 && form == 0 {
				break
			}
			if form == formImplicitConst {
				c.skipLEB("implicit constant")
			}
			t.attrs = append(t.attrs, abbrevAttr{attr: clamp32(attr), form: clamp32(form), formAt: uint32(formAt), formLen: uint8(c.off - formAt)})
		}
		sp.end = len(t.attrs)
		if c.err != nil {
			break
		}
		if _, dup := t.decl(code); dup {
			c.fail(at, "abbreviation code %d defined twice", code)
			break
		}
		if code < 1<<12 {
			for uint64(len(t.low)) <= code {
				t.low = append(t.low, abbrevSpan{})
			}
			t.low[code] = sp
		} else {
			if t.high == nil {
				t.high = map[uint64]abbrevSpan{}
			}
			t.high[code] = sp
		}
	}
	return t, c.err
}

// formValue skips the value of form at c.off and returns where it is and,
// for a fixed-size integer value, its size (0 for any other value).
func formValue(c *dwarfCursor, form uint64, u *unitHeader) (at, size int) {
	at = c.off
	switch form {
	case formAddr:
		size = u.addrSize
	case formData1, formRef1, formFlag, formStrx1, formAddrx1:
		size = 1
	case formData2, formRef2, formStrx2, formAddrx2:
		size = 2
	case formStrx3, formAddrx3:
		size = 3
	case formData4, formRef4, formStrx4, formAddrx4, formRefSup4:
		size = 4
	case formData8, formRef8, formRefSig8, formRefSup8:
		size = 8
	case formStrp, formLineStrp, formSecOffset, formStrpSup, formGNURefAlt, formGNUStrpAlt:
		size = u.offsetSize()
	case formRefAddr:
		size = u.offsetSize()
		if u.version == 2 {
			size = u.addrSize
		}
	case formData16:
		c.take(16, "16-byte value")
	case formSdata, formUdata, formRefUdata, formStrx, formAddrx, formLoclistx, formRnglistx, formGNUAddrIndex, formGNUStrIndex:
		c.uleb("LEB128 value")
	case formString:
		c.cstring("string")
	case formBlock1:
		c.take(c.uint(1, "block length"), "block")
	case formBlock2:
		c.take(c.uint(2, "block length"), "block")
	case formBlock4:
		c.take(c.uint(4, "block length"), "block")
	case formBlock, formExprloc:
		c.take(c.uleb("block length"), "block")
	case formFlagPresent, formImplicitConst:
	default:
		c.fail(at, "unknown form %#x", form)
	}
	if size > 0 {
		c.take(uint64(size), "value")
	}
	return at, size
}

// patchRole says what the walker rewrites in a file's entries.
type patchRole int

const (
	// patchMain: the file that names a supplementary file. Its references
	// into the supplementary file become ordinary references into the
	// merged sections, where the supplementary file comes after it.
	patchMain patchRole = iota
	// patchSup: the supplementary file, appended after the main file.
	patchSup
)

// mergeShift is where the supplementary file's sections start in the
// merged ones (the main file's lengths), and how long they are.
type mergeShift struct {
	info, abbrev, str, line, lineStr uint64
	supInfo, supStr                  uint64
	supHasLineStr                    bool
}

// patchUnits walks every entry of info (one file's .debug_info, inside the
// merged buffer) and rewrites, in place and without changing any size,
// the values and form codes that the merge moves. abbrev is that file's
// .debug_abbrev, inside the merged buffer too.
func patchUnits(info, abbrev []byte, order binary.ByteOrder, role patchRole, s *mergeShift) error {
	tables := map[uint64]*abbrevTable{}
	c := &dwarfCursor{section: ".debug_info", data: info, order: order}
	for c.off < len(info) {
		u, err := readUnitHeader(c)
		if err != nil {
			return err
		}
		t := tables[u.abbrev]
		if t == nil {
			if t, err = readAbbrevTable(abbrev, u.abbrev, order); err != nil {
				return fmt.Errorf("unit at %#x: %w", u.off, err)
			}
			for i, a := range t.attrs {
				t.attrs[i].act = actionOf(role, uint64(a.form), uint64(a.attr))
			}
			tables[u.abbrev] = t
		}
		if u.dwarf64 {
			t.formats |= 2
		} else {
			t.formats |= 1
		}
		if role == patchSup {
			// The supplementary file's abbreviations follow the main file's.
			if !putUint(order, info[u.abbrevAt:u.abbrevAt+u.offsetSize()], u.abbrev+s.abbrev) {
				return fmt.Errorf(".debug_info at %#x: abbreviation offset past 4 GiB once merged", u.off)
			}
		}
		if err := patchEntries(c, &u, t, role, s); err != nil {
			return err
		}
		c.off = u.end
	}
	if role == patchMain {
		return rewriteAltForms(abbrev, tables)
	}
	return nil
}

// patchEntries patches the entries of unit u, c being at its first one.
func patchEntries(c *dwarfCursor, u *unitHeader, t *abbrevTable, role patchRole, s *mergeShift) error {
	whole := c.data
	c.data = c.data[:u.end]
	defer func() { c.data = whole }()
	for c.off < u.end && c.err == nil {
		at := c.off
		code := c.uleb("abbreviation code")
		if code == 0 || c.err != nil {
			continue
		}
		attrs, ok := t.decl(code)
		if !ok {
			c.fail(at, "abbreviation code %d is not in the table at %#x", code, u.abbrev)
			break
		}
		for _, a := range attrs {
			form, act := uint64(a.form), a.act
			for i := 0; form == formIndirect && c.err == nil; i++ {
				formAt := c.off
				form = c.uleb("indirect form")
				if i == maxIndirectForms {
					c.fail(formAt, "DW_FORM_indirect nested more than %d times", maxIndirectForms)
				}
				if role == patchMain && c.err == nil {
					if nf, ok := mainForm(form, u.dwarf64); ok && !putULEBPadded(c.data[formAt:c.off], nf) {
						c.fail(formAt, "cannot rewrite indirect form %#x in place", form)
					}
				}
				act = actionOf(role, form, uint64(a.attr))
			}
			vat, size := formValue(c, form, u)
			if c.err != nil {
				break
			}
			if act == keepValue {
				continue
			}
			if err := patchValue(c.data[vat:vat+size], c.order, act, form, u, s); err != nil {
				c.fail(vat, "%v", err)
				break
			}
		}
	}
	return c.err
}

// valueAction is what the merge does to a value, by its form and
// attribute and by the file it is in.
type valueAction uint8

const (
	keepValue       valueAction = iota
	refIntoSup                  // main file: reference into the supplementary .debug_info
	strIntoSup                  // main file: offset in the supplementary .debug_str
	shiftInfo                   // supplementary file: DW_FORM_ref_addr
	shiftStr                    // supplementary file: DW_FORM_strp
	shiftLineStr                // supplementary file: DW_FORM_line_strp
	shiftLine                   // supplementary file: DW_AT_stmt_list
	nestedSup                   // supplementary file: a form of its own supplementary file
	indexedSup                  // supplementary file: an index into a table of the unit
	resolveIndirect             // DW_FORM_indirect: decided by the form in the entry
)

func actionOf(role patchRole, form, attr uint64) valueAction {
	if form == formIndirect {
		return resolveIndirect
	}
	if role == patchMain {
		switch form {
		case formGNURefAlt, formRefSup4, formRefSup8:
			return refIntoSup
		case formGNUStrpAlt, formStrpSup:
			return strIntoSup
		}
		return keepValue
	}
	switch form {
	case formRefAddr:
		return shiftInfo
	case formStrp:
		return shiftStr
	case formLineStrp:
		return shiftLineStr
	case formSecOffset, formData4, formData8:
		if attr == attrStmtList {
			return shiftLine
		}
	case formGNURefAlt, formGNUStrpAlt, formRefSup4, formRefSup8, formStrpSup:
		return nestedSup
	case formStrx, formStrx1, formStrx2, formStrx3, formStrx4, formAddrx, formAddrx1, formAddrx2, formAddrx3, formAddrx4,
		formLoclistx, formRnglistx, formGNUAddrIndex, formGNUStrIndex:
		return indexedSup
	}
	return keepValue
}

// patchValue applies act to one value (v, of its form's fixed size;
// empty for a value that is not a fixed-size integer).
func patchValue(v []byte, order binary.ByteOrder, act valueAction, form uint64, u *unitHeader, s *mergeShift) error {
	var shift uint64
	switch act {
	case keepValue:
		return nil
	case refIntoSup:
		// A reference into the supplementary .debug_info becomes a
		// unit-relative one (DW_FORM_ref4/ref8, the same size): the
		// target is after this unit in the merged section.
		x := getUint(order, v)
		if x >= s.supInfo {
			return fmt.Errorf("reference %#x past the supplementary file's .debug_info (%#x bytes)", x, s.supInfo)
		}
		if !putUint(order, v, s.info+x-uint64(u.off)) {
			return fmt.Errorf("reference %#x out of reach once merged", x)
		}
		return nil
	case strIntoSup:
		x := getUint(order, v)
		if x >= s.supStr {
			return fmt.Errorf("string offset %#x past the supplementary file's .debug_str (%#x bytes)", x, s.supStr)
		}
		if !putUint(order, v, s.str+x) {
			return fmt.Errorf("string offset %#x past 4 GiB once merged", x)
		}
		return nil
	case shiftInfo:
		shift = s.info
	case shiftStr:
		shift = s.str
	case shiftLineStr:
		if !s.supHasLineStr {
			return fmt.Errorf("DW_FORM_line_strp without a .debug_line_str section")
		}
		shift = s.lineStr
	case shiftLine:
		shift = s.line
	case nestedSup:
		return fmt.Errorf("form %#x: the supplementary file refers to a supplementary file of its own", form)
	case indexedSup:
		return fmt.Errorf("form %#x (an index into a table of the unit) is not supported in a supplementary file", form)
	default:
		return fmt.Errorf("form %#x: unresolved DW_FORM_indirect", form)
	}
	if shift == 0 {
		return nil
	}
	if len(v) != 4 && len(v) != 8 {
		return fmt.Errorf("form %#x: a %d-byte offset cannot move", form, len(v))
	}
	x := getUint(order, v)
	if x+shift < x || !putUint(order, v, x+shift) {
		return fmt.Errorf("form %#x: offset %#x out of reach once merged", form, x)
	}
	return nil
}

// mainForm is the form that replaces a main-file form referring to the
// supplementary file, and whether there is one.
func mainForm(form uint64, dwarf64 bool) (uint64, bool) {
	switch form {
	case formGNURefAlt:
		if dwarf64 {
			return formRef8, true
		}
		return formRef4, true
	case formRefSup4:
		return formRef4, true
	case formRefSup8:
		return formRef8, true
	case formGNUStrpAlt, formStrpSup:
		return formStrp, true
	}
	return 0, false
}

// rewriteAltForms rewrites the form codes of the main file's tables once
// their values are patched: DW_FORM_GNU_ref_alt (2 bytes of LEB128)
// becomes DW_FORM_ref4 written as 0x93 0x00, and so on.
func rewriteAltForms(abbrev []byte, tables map[uint64]*abbrevTable) error {
	done := map[uint32]uint64{} // tables can overlap: they must agree
	for off, t := range tables {
		for _, a := range t.attrs {
			if a.form == formGNURefAlt && t.formats == 3 {
				return fmt.Errorf(".debug_abbrev: table at %#x uses DW_FORM_GNU_ref_alt and serves both 32- and 64-bit units", off)
			}
			nf, ok := mainForm(uint64(a.form), t.formats == 2)
			if !ok {
				continue
			}
			if prev, twice := done[a.formAt]; twice && prev != nf {
				return fmt.Errorf(".debug_abbrev at %#x: overlapping tables want forms %#x and %#x", a.formAt, prev, nf)
			}
			done[a.formAt] = nf
			if !putULEBPadded(abbrev[a.formAt:a.formAt+uint32(a.formLen)], nf) {
				return fmt.Errorf(".debug_abbrev at %#x: cannot rewrite form %#x in place", a.formAt, a.form)
			}
		}
	}
	return nil
}

// patchLineStrings moves the string offsets in the headers of the
// supplementary file's DWARF 5 line tables (earlier versions hold their
// strings inline).
func patchLineStrings(line []byte, order binary.ByteOrder, s *mergeShift) error {
	c := &dwarfCursor{section: ".debug_line", data: line, order: order}
	for c.off < len(line) && c.err == nil {
		start := c.off
		end, dwarf64 := readUnitLength(c)
		if c.err != nil {
			break
		}
		whole := c.data
		c.data = c.data[:end]
		version := int(c.uint(2, "line table version"))
		if c.err == nil && (version < 2 || version > 5) {
			c.fail(start, "line table version %d, want 2 to 5", version)
		}
		if version == 5 {
			u := &unitHeader{dwarf64: dwarf64, version: 5}
			u.addrSize = int(c.uint(1, "address size"))
			c.take(1, "segment selector size")
			c.take(uint64(u.offsetSize()), "header length")
			c.take(5, "line program parameters") // min_inst_length to line_range
			if base := c.uint(1, "opcode base"); base > 0 {
				c.take(base-1, "standard opcode lengths")
			} else {
				c.fail(start, "opcode base 0")
			}
			for range 2 { // the directories, then the files
				var forms []uint64
				n := c.uint(1, "entry format count")
				for i := uint64(0); i < n && c.err == nil; i++ {
					c.uleb("content type")
					forms = append(forms, c.uleb("form"))
				}
				count := c.uleb("entry count")
				if count > uint64(len(c.data)-c.off) {
					c.fail(start, "%d entries in %d bytes", count, len(c.data)-c.off)
				}
				for i := uint64(0); i < count && c.err == nil; i++ {
					for _, form := range forms {
						vat, size := formValue(c, form, u)
						if c.err != nil {
							break
						}
						if err := patchValue(c.data[vat:vat+size], order, actionOf(patchSup, form, 0), form, u, s); err != nil {
							c.fail(vat, "%v", err)
						}
					}
				}
			}
		}
		c.data = whole
		if c.err == nil {
			c.off = end
		}
	}
	return c.err
}
