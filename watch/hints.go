package watch

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// TypeHint says what DWARF knows of the base register at a site: which
// variables it holds there, and whether their types fit the site's
// reading (the watched object, or the member or container Base names).
// A displacement alone cannot tell ev->eof from buf->pos; the variables
// usually can.
type TypeHint uint8

const (
	// HintNone: no variable is described as living in the base register
	// at the instruction (optimized out, a temporary, no DWARF).
	HintNone TypeHint = iota
	// HintMatch: a variable in the base register points where the site
	// assumes: to the watched struct (BaseAt 0), to the member at BaseAt,
	// or to the container that embeds the object at -BaseAt.
	HintMatch
	// HintOpaque: only variables whose type says nothing (void *, char *,
	// integers) are there.
	HintOpaque
	// HintMismatch: every variable there points to some other struct: the
	// write is most likely to another type's member.
	HintMismatch
)

var hintNames = [...]string{HintNone: "none", HintMatch: "match", HintOpaque: "opaque", HintMismatch: "mismatch"}

func (h TypeHint) String() string {
	if int(h) < len(hintNames) {
		return hintNames[h]
	}
	return fmt.Sprintf("hint(%d)", h)
}

// locSections are the DWARF sections location lists need.
type locSections struct {
	loclists, loc, addr []byte
}

// loadLocSections reads them from the file the DWARF came from.
func loadLocSections(bin *symbols.Binary) *locSections {
	f := bin.ELF()
	if src := bin.DebugSource; src != "" && src != "embedded" {
		if i := strings.IndexByte(src, ' '); i > 0 {
			if df, err := elf.Open(src[i+1:]); err == nil {
				defer df.Close()
				f = df
			}
		}
	}
	ls := &locSections{}
	for name, dst := range map[string]*[]byte{".debug_loclists": &ls.loclists, ".debug_loc": &ls.loc, ".debug_addr": &ls.addr} {
		if s := f.Section(name); s != nil {
			if data, err := s.Data(); err == nil {
				*dst = data
			}
		}
	}
	return ls
}

// cuInfo is what location lists need of their compile unit.
type cuInfo struct {
	base, addrBase, locBase uint64
}

func newCUInfo(cu *dwarf.Entry) cuInfo {
	var c cuInfo
	if v, ok := cu.Val(dwarf.AttrLowpc).(uint64); ok {
		c.base = v
	}
	if v, ok := cu.Val(dwarf.AttrAddrBase).(int64); ok {
		c.addrBase = uint64(v)
	}
	if v, ok := cu.Val(dwarf.AttrLoclistsBase).(int64); ok {
		c.locBase = uint64(v)
	}
	return c
}

// locationAt returns the location expression of e at pc.
func (ls *locSections) locationAt(e *dwarf.Entry, cu cuInfo, pc uint64) []byte {
	f := e.AttrField(dwarf.AttrLocation)
	if f == nil {
		return nil
	}
	switch f.Class {
	case dwarf.ClassExprLoc:
		b, _ := f.Val.([]byte)
		return b
	case dwarf.ClassLocListPtr, dwarf.ClassLocList:
		off, ok := f.Val.(int64)
		if !ok {
			return nil
		}
		if len(ls.loclists) > 0 {
			return ls.loclist5(cu, uint64(off), f.Class == dwarf.ClassLocList, pc)
		}
		return ls.loclist4(cu, uint64(off), pc)
	}
	return nil
}

func uleb(r *bytes.Reader) uint64 {
	var v uint64
	var shift uint
	for {
		c, err := r.ReadByte()
		if err != nil {
			return v
		}
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v
		}
	}
}

func sleb(r *bytes.Reader) int64 {
	var v int64
	var shift uint
	for {
		c, err := r.ReadByte()
		if err != nil {
			return v
		}
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func (ls *locSections) debugAddr(cu cuInfo, i uint64) (uint64, bool) {
	at := cu.addrBase + 8*i
	if at+8 > uint64(len(ls.addr)) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(ls.addr[at:]), true
}

// loclist5 walks a DWARF 5 location list (with GCC's view pairs).
func (ls *locSections) loclist5(cu cuInfo, off uint64, indexed bool, pc uint64) []byte {
	data := ls.loclists
	if indexed {
		at := cu.locBase + off*4
		if at+4 > uint64(len(data)) {
			return nil
		}
		off = cu.locBase + uint64(binary.LittleEndian.Uint32(data[at:]))
	}
	if off >= uint64(len(data)) {
		return nil
	}
	r := bytes.NewReader(data[off:])
	base := cu.base
	var deflt []byte
	addr := func() uint64 {
		var b [8]byte
		r.Read(b[:])
		return binary.LittleEndian.Uint64(b[:])
	}
	expr := func() []byte {
		n := uleb(r)
		if n > uint64(r.Len()) {
			return nil
		}
		e := make([]byte, n)
		r.Read(e)
		return e
	}
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return nil
		}
		var start, end uint64
		ok := true
		switch kind {
		case 0x00: // end_of_list
			return deflt
		case 0x01: // base_addressx
			base, ok = ls.debugAddr(cu, uleb(r))
			if !ok {
				return nil
			}
			continue
		case 0x06: // base_address
			base = addr()
			continue
		case 0x09: // GNU view pair
			uleb(r)
			uleb(r)
			continue
		case 0x05: // default_location
			deflt = expr()
			continue
		case 0x02: // startx_endx
			i, j := uleb(r), uleb(r)
			start, ok = ls.debugAddr(cu, i)
			if ok {
				end, ok = ls.debugAddr(cu, j)
			}
		case 0x03: // startx_length
			i, n := uleb(r), uleb(r)
			start, ok = ls.debugAddr(cu, i)
			end = start + n
		case 0x04: // offset_pair
			s, e := uleb(r), uleb(r)
			start, end = base+s, base+e
		case 0x07: // start_end
			start, end = addr(), addr()
		case 0x08: // start_length
			start = addr()
			end = start + uleb(r)
		default:
			return nil
		}
		e := expr()
		if !ok {
			return nil
		}
		if pc >= start && pc < end {
			return e
		}
	}
}

// loclist4 walks a DWARF 2-4 .debug_loc list.
func (ls *locSections) loclist4(cu cuInfo, off, pc uint64) []byte {
	data := ls.loc
	base := cu.base
	for off+16 <= uint64(len(data)) {
		start := binary.LittleEndian.Uint64(data[off:])
		end := binary.LittleEndian.Uint64(data[off+8:])
		off += 16
		if start == 0 && end == 0 {
			return nil
		}
		if start == ^uint64(0) {
			base = end
			continue
		}
		if off+2 > uint64(len(data)) {
			return nil
		}
		n := uint64(binary.LittleEndian.Uint16(data[off:]))
		off += 2
		if off+n > uint64(len(data)) {
			return nil
		}
		if pc >= base+start && pc < base+end {
			return data[off : off+n]
		}
		off += n
	}
	return nil
}

// regValue decodes the location expressions that say a value is a
// register plus a constant: DW_OP_regN, DW_OP_regx N, and DW_OP_bregN k;
// DW_OP_stack_value.
func regValue(expr []byte) (reg int, add int64, ok bool) {
	if len(expr) == 0 {
		return 0, 0, false
	}
	op := expr[0]
	switch {
	case op >= 0x50 && op <= 0x6f && len(expr) == 1:
		return int(op - 0x50), 0, true
	case op == 0x90:
		r := bytes.NewReader(expr[1:])
		n := uleb(r)
		return int(n), 0, r.Len() == 0
	case op >= 0x70 && op <= 0x8f:
		r := bytes.NewReader(expr[1:])
		k := sleb(r)
		if r.Len() == 1 {
			if last, _ := r.ReadByte(); last == 0x9f {
				return int(op - 0x70), k, true
			}
		}
	}
	return 0, 0, false
}

// hintFor judges one variable, whose value is the site's base register
// plus add, against the site's reading.
func hintFor(bin *symbols.Binary, s *Site, e *dwarf.Entry, add int64) (TypeHint, string) {
	name, _ := bin.Attr(e, dwarf.AttrName).(string)
	off, ok := bin.Attr(e, dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return HintOpaque, name
	}
	t, err := bin.DWARF().Type(off)
	if err != nil {
		return HintOpaque, name
	}
	label := fmt.Sprintf("%s (%s)", name, symbols.TypeName(t))
	if add != 0 {
		label = fmt.Sprintf("%s (%s) = %s%+d", name, symbols.TypeName(t), regName(s.Base), add)
	}
	ptr, ok := symbols.Underlying(t).(*dwarf.PtrType)
	if !ok || ptr.Type == nil {
		return HintOpaque, label
	}
	st, ok := symbols.Underlying(ptr.Type).(*dwarf.StructType)
	if !ok {
		return HintOpaque, label
	}
	if st.StructName == "" {
		// typedef struct { ... } ngx_str_t: not the watched struct,
		// which has a tag, nor a member or container of it we know.
		if s.Field.StructTag == "" {
			return HintOpaque, label
		}
		return HintMismatch, label
	}
	// The variable points at offset p from the start of the watched
	// object, if the site's reading is right.
	p := s.BaseAt + add
	if p == 0 && st.StructName == s.Field.StructTag && st.Size() == s.Field.StructSize {
		return HintMatch, label
	}
	for _, b := range s.Field.Bases {
		if b.At == p && contains(b.Tags, st.StructName) {
			return HintMatch, label
		}
	}
	return HintMismatch, label
}

var dwarfRegNames = [...]string{"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

func regName(n int) string {
	if n >= 0 && n < len(dwarfRegNames) {
		return dwarfRegNames[n]
	}
	return fmt.Sprintf("reg%d", n)
}

// judge combines the verdicts of the variables in one base register.
func judge(s *Site, h TypeHint, label string) {
	rank := func(h TypeHint) int {
		switch h {
		case HintMatch:
			return 3
		case HintOpaque:
			return 2
		case HintMismatch:
			return 1
		}
		return 0
	}
	if rank(h) > rank(s.Hint) {
		s.Hint = h
		s.BaseVars = append([]string{label}, s.BaseVars...)
	} else {
		s.BaseVars = append(s.BaseVars, label)
	}
}
