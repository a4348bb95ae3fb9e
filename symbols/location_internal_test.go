package symbols

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func newReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func entryWithFrameBase(fb []byte) *dwarf.Entry {
	return &dwarf.Entry{Tag: dwarf.TagSubprogram, Field: []dwarf.Field{{Attr: dwarf.AttrFrameBase, Val: fb, Class: dwarf.ClassExprLoc}}}
}

func TestDecodeEntryExpr(t *testing.T) {
	fbErr := errors.New("unsupported frame base")
	for _, c := range []struct {
		name    string
		expr    []byte
		cfa     int64
		fbErr   error
		want    Location
		wantErr string // substring; "" means success
	}{
		{name: "reg5", expr: []byte{0x55}, want: Location{Kind: InRegister, Reg: RegRDI}},
		{name: "reg0", expr: []byte{0x50}, want: Location{Kind: InRegister, Reg: RegRAX}},
		{name: "reg15", expr: []byte{0x5f}, want: Location{Kind: InRegister, Reg: RegR15}},
		{name: "regx", expr: []byte{0x90, 0x0c}, want: Location{Kind: InRegister, Reg: 12}},
		{name: "regx multi-byte uleb", expr: []byte{0x90, 0x81, 0x01}, want: Location{Kind: InRegister, Reg: 129}},
		{name: "reg piece 8 is the whole value", expr: []byte{0x54, 0x93, 0x08}, want: Location{Kind: InRegister, Reg: RegRSI}},
		{name: "fbreg with call_frame_cfa", expr: []byte{0x91, 0x00}, cfa: 8, want: Location{Kind: InMemory, Reg: RegRSP, Offset: 8}},
		{name: "fbreg +8", expr: []byte{0x91, 0x08}, cfa: 8, want: Location{Kind: InMemory, Reg: RegRSP, Offset: 16}},
		{name: "fbreg -16", expr: []byte{0x91, 0x70}, cfa: 8, want: Location{Kind: InMemory, Reg: RegRSP, Offset: -8}},
		{name: "fbreg large", expr: []byte{0x91, 0x80, 0x01}, cfa: 8, want: Location{Kind: InMemory, Reg: RegRSP, Offset: 136}},
		{name: "fbreg with rsp-based frame base", expr: []byte{0x91, 0x10}, cfa: 0, want: Location{Kind: InMemory, Reg: RegRSP, Offset: 16}},
		{name: "fbreg without usable frame base", expr: []byte{0x91, 0x08}, fbErr: fbErr, wantErr: "unsupported frame base"},
		{name: "breg5 is memory", expr: []byte{0x75, 0x10}, want: Location{Kind: InMemory, Reg: RegRDI, Offset: 16}},
		{name: "breg7 negative", expr: []byte{0x77, 0x78}, want: Location{Kind: InMemory, Reg: RegRSP, Offset: -8}},
		{name: "breg5 stack_value", expr: []byte{0x75, 0x10, 0x9f}, want: Location{Kind: RegisterPlusOffset, Reg: RegRDI, Offset: 16}},
		{name: "breg4 -1 stack_value", expr: []byte{0x74, 0x7f, 0x9f}, want: Location{Kind: RegisterPlusOffset, Reg: RegRSI, Offset: -1}},
		{name: "bregx stack_value", expr: []byte{0x92, 0x0d, 0x04, 0x9f}, want: Location{Kind: RegisterPlusOffset, Reg: 13, Offset: 4}},
		{name: "entry_value reg4 stack_value", expr: []byte{0xa3, 0x01, 0x54, 0x9f}, want: Location{Kind: InRegister, Reg: RegRSI}},
		{name: "GNU_entry_value reg5 stack_value", expr: []byte{0xf3, 0x01, 0x55, 0x9f}, want: Location{Kind: InRegister, Reg: RegRDI}},
		{name: "entry_value regx stack_value", expr: []byte{0xa3, 0x02, 0x90, 0x0e, 0x9f}, want: Location{Kind: InRegister, Reg: 14}},
		{name: "entry_value alone", expr: []byte{0xa3, 0x01, 0x52}, want: Location{Kind: InRegister, Reg: RegRCX}},
		{name: "entry_value of breg", expr: []byte{0xa3, 0x02, 0x75, 0x00, 0x9f}, wantErr: "DW_OP_entry_value of [rdi+0]"},
		{name: "entry_value then plus", expr: []byte{0xa3, 0x01, 0x55, 0x22}, wantErr: "after DW_OP_entry_value"},
		{name: "entry_value truncated", expr: []byte{0xa3, 0x04}, wantErr: "truncated DW_OP_entry_value"},
		{name: "entry_value partly there", expr: []byte{0xa3, 0x03, 0x55, 0x9f}, wantErr: "truncated DW_OP_entry_value"},
		{name: "entry_value huge length", expr: []byte{0xa3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, wantErr: "truncated DW_OP_entry_value"},
		{name: "lit3 stack_value", expr: []byte{0x33, 0x9f}, want: Location{Kind: Constant, Offset: 3}},
		{name: "const1s -2 stack_value", expr: []byte{0x09, 0xfe, 0x9f}, want: Location{Kind: Constant, Offset: -2}},
		{name: "const2u stack_value", expr: []byte{0x0a, 0x34, 0x12, 0x9f}, want: Location{Kind: Constant, Offset: 0x1234}},
		{name: "const4s stack_value", expr: []byte{0x0d, 0xff, 0xff, 0xff, 0xff, 0x9f}, want: Location{Kind: Constant, Offset: -1}},
		{name: "consts stack_value", expr: []byte{0x11, 0x7f, 0x9f}, want: Location{Kind: Constant, Offset: -1}},
		{name: "constu stack_value", expr: []byte{0x10, 0xe5, 0x8e, 0x26, 0x9f}, want: Location{Kind: Constant, Offset: 624485}},
		{name: "constant without stack_value", expr: []byte{0x33}, wantErr: "without DW_OP_stack_value"},
		{name: "two pieces", expr: []byte{0x55, 0x93, 0x04, 0x54, 0x93, 0x04}, wantErr: "DW_OP_piece 4"},
		{name: "small piece", expr: []byte{0x55, 0x93, 0x04}, wantErr: "pieces"},
		{name: "piece of memory", expr: []byte{0x75, 0x00, 0x93, 0x08, 0x74, 0x00, 0x93, 0x08}, wantErr: "pieces"},
		{name: "empty is optimized out", expr: nil, wantErr: "optimized out"},
		{name: "addr", expr: []byte{0x03, 1, 2, 3, 4, 5, 6, 7, 8}, wantErr: "DW_OP_addr"},
		{name: "GNU_parameter_ref", expr: []byte{0xfa, 0x10, 0, 0, 0, 0x9f}, wantErr: "unsupported DWARF operation 0xfa"},
		{name: "reg then plus", expr: []byte{0x55, 0x22}, wantErr: "unsupported DWARF operation 0x22 after rdi"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeEntryExpr(c.expr, c.cfa, c.fbErr)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("decodeEntryExpr(% x) = %v, %v; want an error containing %q", c.expr, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("decodeEntryExpr(% x) = %v (%+v), %v; want %v (%+v)", c.expr, got, got, err, c.want, c.want)
			}
		})
	}
}

func TestFrameBase(t *testing.T) {
	// frameBase reads DW_AT_frame_base from an entry; the entries here are
	// built by hand.
	for _, c := range []struct {
		fb      []byte
		want    int64
		wantErr bool
	}{
		{fb: []byte{0x9c}, want: 8},             // DW_OP_call_frame_cfa
		{fb: []byte{0x77, 0x10}, want: 16},      // DW_OP_breg7 (rsp) 16
		{fb: []byte{0x76, 0x10}, wantErr: true}, // DW_OP_breg6 (rbp): not at entry
	} {
		got, err := frameBase(entryWithFrameBase(c.fb))
		if (err != nil) != c.wantErr || (!c.wantErr && got != c.want) {
			t.Errorf("frameBase(% x) = %d, %v; want %d (error %v)", c.fb, got, err, c.want, c.wantErr)
		}
	}
}

// loclists builds .debug_loclists bytes.
type loclists struct{ b []byte }

func (l *loclists) u8(v byte) *loclists { l.b = append(l.b, v); return l }
func (l *loclists) uleb(v uint64) *loclists {
	l.b = binary.AppendUvarint(l.b, v) // LEB128 is the varint encoding
	return l
}
func (l *loclists) addr(v uint64) *loclists { l.b = binary.LittleEndian.AppendUint64(l.b, v); return l }
func (l *loclists) expr(e ...byte) *loclists {
	l.uleb(uint64(len(e)))
	l.b = append(l.b, e...)
	return l
}

func TestLocListAtDWARF5(t *testing.T) {
	var l loclists
	// A unit header (12 bytes, content irrelevant here), then the offsets
	// table for DW_FORM_loclistx at loclists_base, patched below.
	l.b = make([]byte, 12+2*4)
	locBase := uint64(12)
	// List 1 at offset 1, as GCC writes it: each entry preceded by its view pair.
	list1 := uint64(len(l.b))
	l.u8(lleGNUViewPair).uleb(0).uleb(1).
		u8(lleBaseAddress).addr(0x401000).
		u8(lleGNUViewPair).uleb(1).uleb(2).
		u8(lleOffsetPair).uleb(0x10).uleb(0x20).expr(0x55). // [0x401010, 0x401020): rdi
		u8(lleGNUViewPair).uleb(2).uleb(3).
		u8(lleOffsetPair).uleb(0x20).uleb(0x30).expr(0x53). // [0x401020, 0x401030): rbx
		u8(lleStartLength).addr(0x500000).uleb(0x80).expr(0xa3, 0x01, 0x55, 0x9f).
		u8(lleEndOfList)
	// List 2: offset_pair against the unit's base (DW_AT_low_pc), then a
	// default location.
	list2 := uint64(len(l.b))
	l.u8(lleOffsetPair).uleb(0).uleb(4).expr(0x54).
		u8(lleDefault).expr(0x51).
		u8(lleEndOfList)
	// List 3: indexed addresses in .debug_addr.
	list3 := uint64(len(l.b))
	l.u8(lleBaseAddressx).uleb(1).
		u8(lleOffsetPair).uleb(0).uleb(8).expr(0x58).
		u8(lleStartxLength).uleb(0).uleb(0x10).expr(0x59).
		u8(lleStartxEndx).uleb(2).uleb(3).expr(0x5a).
		u8(lleStartEnd).addr(0x900000).addr(0x900010).expr(0x5b).
		u8(lleEndOfList)
	binary.LittleEndian.PutUint32(l.b[locBase:], uint32(list1-locBase))
	binary.LittleEndian.PutUint32(l.b[locBase+4:], uint32(list2-locBase))
	// A truncated list and an unknown entry kind.
	truncated := uint64(len(l.b))
	l.u8(lleOffsetPair).uleb(0).uleb(4).uleb(9).u8(0x55)
	bad := uint64(len(l.b))
	l.u8(0x42)

	var addr []byte
	addr = append(addr, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0) // a header-sized pad: addr_base is 8
	for _, a := range []uint64{0x700000, 0x600000, 0x800000, 0x800020} {
		addr = binary.LittleEndian.AppendUint64(addr, a)
	}
	b := &Binary{sections: dwarfSections{loclists: l.b, addr: addr}}
	u := &unit{version: 5, base: 0x402000, addrBase: 8, locBase: locBase, addrSize: 8}

	for _, c := range []struct {
		name    string
		off     uint64
		indexed bool
		pc      uint64
		want    []byte // nil: no entry covers pc
		wantErr string
	}{
		{name: "offset_pair after base_address", off: list1, pc: 0x401010, want: []byte{0x55}},
		{name: "end is exclusive", off: list1, pc: 0x401020, want: []byte{0x53}},
		{name: "last byte", off: list1, pc: 0x40102f, want: []byte{0x53}},
		{name: "before", off: list1, pc: 0x40100f},
		{name: "start_length", off: list1, pc: 0x50007f, want: []byte{0xa3, 0x01, 0x55, 0x9f}},
		{name: "after start_length", off: list1, pc: 0x500080},
		{name: "unit base", off: list2, pc: 0x402003, want: []byte{0x54}},
		{name: "default location", off: list2, pc: 0x402004, want: []byte{0x51}},
		{name: "base_addressx", off: list3, pc: 0x600004, want: []byte{0x58}},
		{name: "startx_length", off: list3, pc: 0x70000f, want: []byte{0x59}},
		{name: "startx_endx", off: list3, pc: 0x800010, want: []byte{0x5a}},
		{name: "start_end", off: list3, pc: 0x900000, want: []byte{0x5b}},
		{name: "loclistx 0", off: 0, indexed: true, pc: 0x401010, want: []byte{0x55}},
		{name: "loclistx 1", off: 1, indexed: true, pc: 0x402000, want: []byte{0x54}},
		{name: "loclistx out of range", off: 100, indexed: true, pc: 0x401010, wantErr: "out of range"},
		{name: "offset out of range", off: uint64(len(l.b)) + 5, pc: 0, wantErr: "out of range"},
		{name: "truncated", off: truncated, pc: 0x403000, wantErr: "truncated"},
		{name: "unknown kind", off: bad, pc: 0, wantErr: "unknown location list entry kind 0x42"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := b.locListAt(u, c.off, c.indexed, c.pc)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("locListAt(%#x, %#x) = % x, %v; want error %q", c.off, c.pc, got, err, c.wantErr)
				}
				return
			}
			if err != nil || string(got) != string(c.want) || (got == nil) != (c.want == nil) {
				t.Fatalf("locListAt(%#x, %#x) = % x, %v; want % x", c.off, c.pc, got, err, c.want)
			}
		})
	}
	if _, err := b.locListAt(nil, list1, false, 0x401010); err == nil {
		t.Errorf("locListAt without a unit: no error")
	}
	// .debug_addr index past the end.
	var l2 loclists
	l2.u8(lleStartxLength).uleb(50).uleb(1).expr(0x55).u8(lleEndOfList)
	b2 := &Binary{sections: dwarfSections{loclists: l2.b, addr: addr}}
	if _, err := b2.locListAt(u, 0, false, 0); err == nil || !strings.Contains(err.Error(), ".debug_addr index 50") {
		t.Errorf("startx_length with a bad index: %v", err)
	}
}

// loc4 builds DWARF 2-4 .debug_loc bytes.
type loc4 struct{ b []byte }

func (l *loc4) entry(start, end uint64, e ...byte) *loc4 {
	l.b = binary.LittleEndian.AppendUint64(l.b, start)
	l.b = binary.LittleEndian.AppendUint64(l.b, end)
	l.b = binary.LittleEndian.AppendUint16(l.b, uint16(len(e)))
	l.b = append(l.b, e...)
	return l
}
func (l *loc4) base(a uint64) *loc4 {
	l.b = binary.LittleEndian.AppendUint64(l.b, ^uint64(0))
	l.b = binary.LittleEndian.AppendUint64(l.b, a)
	return l
}
func (l *loc4) end() *loc4 { l.b = append(l.b, make([]byte, 16)...); return l }

func TestLocListAtDWARF4(t *testing.T) {
	var l loc4
	l.entry(0x0, 0x10, 0x55). // relative to the unit's low_pc 0x1000
					entry(0x10, 0x18, 0xa3, 0x01, 0x55, 0x9f).
					base(0x5000). // base address selection
					entry(0x0, 0x8, 0x54).
					entry(0x8, 0x20, 0x91, 0x08).
					end()
	second := uint64(len(l.b))
	l.entry(0x20, 0x30, 0x50).end()
	truncated := uint64(len(l.b))
	l.b = binary.LittleEndian.AppendUint64(l.b, 0x10)
	l.b = binary.LittleEndian.AppendUint64(l.b, 0x20)
	l.b = binary.LittleEndian.AppendUint16(l.b, 9)
	l.b = append(l.b, 0x55)

	b := &Binary{sections: dwarfSections{loc: l.b}}
	u := &unit{version: 4, base: 0x1000, addrSize: 8}
	for _, c := range []struct {
		off, pc uint64
		want    []byte
		wantErr string
	}{
		{off: 0, pc: 0x1000, want: []byte{0x55}},
		{off: 0, pc: 0x100f, want: []byte{0x55}},
		{off: 0, pc: 0x1010, want: []byte{0xa3, 0x01, 0x55, 0x9f}},
		{off: 0, pc: 0x5000, want: []byte{0x54}},
		{off: 0, pc: 0x5008, want: []byte{0x91, 0x08}},
		{off: 0, pc: 0x1018}, // a gap
		{off: 0, pc: 0x5020}, // past the end
		{off: second, pc: 0x1020, want: []byte{0x50}},
		{off: truncated, pc: 0x1010, wantErr: "truncated"},
		{off: uint64(len(l.b)) + 1, pc: 0, wantErr: "out of range"},
	} {
		got, err := b.locListAt(u, c.off, false, c.pc)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("loc4 %#x at %#x: % x, %v; want error %q", c.off, c.pc, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || string(got) != string(c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("loc4 %#x at %#x: % x, %v; want % x", c.off, c.pc, got, err, c.want)
		}
	}
}

func TestLEB128(t *testing.T) {
	for _, c := range []struct {
		in []byte
		u  uint64
		s  int64
	}{
		{[]byte{0x02}, 2, 2},
		{[]byte{0x7f}, 127, -1},
		{[]byte{0x80, 0x01}, 128, 128},
		{[]byte{0x80, 0x7f}, 16256, -128},
		{[]byte{0xe5, 0x8e, 0x26}, 624485, 624485},
		{[]byte{0xc0, 0xbb, 0x78}, 1973696, -123456},
	} {
		u, err1 := uleb(newReader(c.in))
		s, err2 := sleb(newReader(c.in))
		if err1 != nil || err2 != nil || u != c.u || s != c.s {
			t.Errorf("% x: uleb %d sleb %d (%v %v); want %d %d", c.in, u, s, err1, err2, c.u, c.s)
		}
	}
}
