package symbols

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// dwarfWriter writes DWARF by hand for the walker's tests.
type dwarfWriter struct {
	dwarf64 bool
	b       []byte
}

func (w *dwarfWriter) u8(vs ...byte) *dwarfWriter { w.b = append(w.b, vs...); return w }
func (w *dwarfWriter) u16(v uint16) *dwarfWriter {
	w.b = binary.LittleEndian.AppendUint16(w.b, v)
	return w
}
func (w *dwarfWriter) u32(v uint32) *dwarfWriter {
	w.b = binary.LittleEndian.AppendUint32(w.b, v)
	return w
}
func (w *dwarfWriter) uleb(vs ...uint64) *dwarfWriter {
	for _, v := range vs {
		for {
			b := byte(v & 0x7f)
			v >>= 7
			if v == 0 {
				w.b = append(w.b, b)
				break
			}
			w.b = append(w.b, b|0x80)
		}
	}
	return w
}
func (w *dwarfWriter) str(s string) *dwarfWriter { w.b = append(append(w.b, s...), 0); return w }

// off writes a section offset: 4 bytes, or 8 in 64-bit DWARF.
func (w *dwarfWriter) off(v uint64) *dwarfWriter {
	if w.dwarf64 {
		w.b = binary.LittleEndian.AppendUint64(w.b, v)
		return w
	}
	return w.u32(uint32(v))
}

// unitLength prefixes body with its initial length.
func (w *dwarfWriter) unitLength(body []byte) []byte {
	out := &dwarfWriter{dwarf64: w.dwarf64}
	if w.dwarf64 {
		out.u32(0xffffffff)
		out.b = binary.LittleEndian.AppendUint64(out.b, uint64(len(body)))
	} else {
		out.u32(uint32(len(body)))
	}
	return append(out.b, body...)
}

// unitHeaderSize is the size of a unit header, up to its first entry.
func unitHeaderSize(version int, dwarf64 bool) int {
	n := 4 + 2 + 4 + 1 // length, version, abbrev offset, address size
	if version >= 5 {
		n++ // unit type
	}
	if dwarf64 {
		n += 8 + 4
	}
	return n
}

// unit makes a unit of .debug_info (unitType counts from DWARF 5 on).
func (w *dwarfWriter) unit(version int, unitType byte, dies []byte) []byte {
	h := &dwarfWriter{dwarf64: w.dwarf64}
	h.u16(uint16(version))
	if version >= 5 {
		h.u8(unitType, 8).off(0)
	} else {
		h.off(0).u8(8)
	}
	return w.unitLength(append(h.b, dies...))
}

// lineTable makes a DWARF 5 line table without a program, whose one
// directory is a .debug_str string at dirStr and whose one file is name.
func (w *dwarfWriter) lineTable(dirStr uint64, name string) []byte {
	params := &dwarfWriter{dwarf64: w.dwarf64}
	params.u8(1, 1, 1, 0xfb, 14, 13)                   // min_inst .. opcode_base
	params.u8(0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1)      // standard opcode lengths
	params.u8(1).uleb(1, formStrp).uleb(1).off(dirStr) // directories: path as strp
	params.u8(2).uleb(1, formString, 2, formUdata)     // files: path, directory index
	params.uleb(1).str(name).uleb(0)
	h := &dwarfWriter{dwarf64: w.dwarf64}
	h.u16(5).u8(8, 0).off(uint64(len(params.b)))
	return w.unitLength(append(h.b, params.b...))
}

// altForms are the forms a main file refers to its supplementary file by.
type altForms struct{ ref, strp uint64 }

var (
	gnuAltForms  = altForms{formGNURefAlt, formGNUStrpAlt}
	dwarf5Forms4 = altForms{formRefSup4, formStrpSup}
)

// syntheticPair is a tiny debug file and its supplementary file: a unit
// with variables x (of typedef myint) and y (of int, through
// DW_FORM_indirect), whose names and types are in the supplementary file.
func syntheticPair(version int, dwarf64 bool, forms altForms) (main, sup dwarfBytes) {
	w := &dwarfWriter{dwarf64: dwarf64}
	hdr := unitHeaderSize(version, dwarf64)

	// The supplementary file: a partial unit with int and myint.
	sup.abbrev = (&dwarfWriter{}).
		uleb(1, 0x3c).u8(1).uleb(attrStmtList, formSecOffset, 0, 0).
		uleb(2, 0x24).u8(0).uleb(0x03, formStrp, 0x0b, formData1, 0x3e, formData1, 0, 0).
		uleb(3, 0x16).u8(0).uleb(0x03, formString, 0x49, formRefAddr, 0, 0).
		uleb(0).b
	sup.str = []byte("int\x00x\x00/src\x00")
	offSize := 4
	if dwarf64 {
		offSize = 8
	}
	intDie := hdr + 1 + offSize
	typedefDie := intDie + 1 + offSize + 2
	dies := &dwarfWriter{dwarf64: dwarf64}
	dies.uleb(1).off(0)
	dies.uleb(2).off(0).u8(4, 5)
	dies.uleb(3).str("myint").off(uint64(intDie))
	dies.u8(0)
	sup.info = w.unit(version, 3, dies.b)
	sup.line = w.lineTable(6, "a.h") // "/src"

	// The debug file: x and y, named and typed in the supplementary file.
	main.abbrev = (&dwarfWriter{}).
		uleb(1, 0x11).u8(1).uleb(0x03, formStrp, attrStmtList, formSecOffset, 0, 0).
		uleb(2, 0x34).u8(0).uleb(0x03, forms.strp, 0x49, forms.ref, 0, 0).
		uleb(3, 0x34).u8(0).uleb(0x03, formString, 0x49, formIndirect, 0, 0).
		uleb(0).b
	main.str = []byte("main.c\x00")
	ref := func(d *dwarfWriter, v uint64) {
		if forms.ref == formRefSup4 {
			d.u32(uint32(v))
		} else {
			d.off(v)
		}
	}
	dies = &dwarfWriter{dwarf64: dwarf64}
	dies.uleb(1).off(0).off(0)
	dies.uleb(2).off(4)
	ref(dies, uint64(typedefDie))
	dies.uleb(3).str("y").uleb(forms.ref)
	ref(dies, uint64(intDie))
	dies.u8(0)
	main.info = w.unit(version, 1, dies.b)
	main.line = w.lineTable(0, "b.h")
	return main, sup
}

func mergedData(t *testing.T, m, s dwarfBytes) *dwarf.Data {
	t.Helper()
	out, err := mergeSections(m, s, binary.LittleEndian)
	if err != nil {
		t.Fatalf("mergeSections: %v", err)
	}
	d, err := dwarf.New(out.abbrev, nil, nil, out.info, out.line, nil, nil, out.str)
	if err != nil {
		t.Fatalf("dwarf.New on the merged sections: %v", err)
	}
	return d
}

func TestMergeSectionsSynthetic(t *testing.T) {
	for _, c := range []struct {
		name    string
		version int
		dwarf64 bool
		forms   altForms
	}{
		{"v4 GNU", 4, false, gnuAltForms},
		{"v5 GNU", 5, false, gnuAltForms},
		{"v4 GNU 64-bit", 4, true, gnuAltForms},
		{"v5 sup", 5, false, dwarf5Forms4},
		// DW_FORM_ref_sup8 is 8 bytes in any format: the 64-bit pair
		// writes references as 8 bytes.
		{"v5 sup8 64-bit", 5, true, altForms{formRefSup8, formStrpSup}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, s := syntheticPair(c.version, c.dwarf64, c.forms)
			d := mergedData(t, m, s)
			r := d.Reader()
			cu, err := r.Next()
			if err != nil || cu == nil || cu.Val(dwarf.AttrName) != "main.c" {
				t.Fatalf("first entry %+v, %v; want the unit main.c", cu, err)
			}
			got := map[string]string{}
			for {
				e, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				if e == nil || e.Tag == 0 {
					break
				}
				name, _ := e.Val(dwarf.AttrName).(string)
				off, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
				if !ok {
					t.Fatalf("%q: DW_AT_type is %#v, want an offset", name, e.Val(dwarf.AttrType))
				}
				typ, err := d.Type(off)
				if err != nil {
					t.Fatalf("%q: type at %#x: %v", name, off, err)
				}
				if td, ok := typ.(*dwarf.TypedefType); ok {
					got[name] = td.Name + " = " + td.Type.String()
				} else {
					got[name] = typ.String()
				}
			}
			if want := map[string]string{"x": "myint = int", "y": "int"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("variables %v, want %v", got, want)
			}

			// Both line tables: the main file's where it was, the
			// supplementary file's behind it, its strings moved too.
			files := func(e *dwarf.Entry) string {
				lr, err := d.LineReader(e)
				if err != nil || lr == nil {
					t.Fatalf("LineReader(%v): %v", e.Tag, err)
				}
				var names []string
				for _, f := range lr.Files() {
					if f != nil {
						names = append(names, f.Name)
					}
				}
				return strings.Join(names, " ")
			}
			if got := files(cu); !strings.Contains(got, "main.c/b.h") {
				t.Errorf("main unit's files %q, want main.c/b.h", got)
			}
			r.Seek(dwarf.Offset(len(m.info) + unitHeaderSize(c.version, c.dwarf64)))
			pu, err := r.Next()
			if err != nil || pu == nil || pu.Tag != dwarf.TagPartialUnit {
				t.Fatalf("entry after the main file: %+v, %v; want the partial unit", pu, err)
			}
			if got := files(pu); !strings.Contains(got, "/src/a.h") {
				t.Errorf("supplementary unit's files %q, want /src/a.h", got)
			}
		})
	}
}

func TestLEB128Padded(t *testing.T) {
	for _, c := range []struct {
		v    uint64
		n    int
		want []byte
	}{
		{formRef4, 2, []byte{0x93, 0x00}},
		{formStrp, 2, []byte{0x8e, 0x00}},
		{formRefAddr, 1, []byte{0x10}},
		{formGNURefAlt, 2, []byte{0xa0, 0x3e}},
	} {
		b := make([]byte, c.n)
		if !putULEBPadded(b, c.v) || !bytes.Equal(b, c.want) {
			t.Errorf("putULEBPadded(%d bytes, %#x) = %x, want %x", c.n, c.v, b, c.want)
		}
		if v, n := readULEB(b); v != c.v || n != c.n {
			t.Errorf("readULEB(%x) = %#x, %d", b, v, n)
		}
	}
	if putULEBPadded(make([]byte, 1), formGNURefAlt) {
		t.Error("0x1f20 fits one byte of LEB128?")
	}
	if _, n := readULEB([]byte{0x80, 0x80}); n != 0 {
		t.Errorf("truncated LEB128: n = %d, want 0", n)
	}
	if _, n := readULEB(bytes.Repeat([]byte{0xff}, 11)); n != -1 {
		t.Errorf("overlong LEB128: n = %d, want -1", n)
	}
}

// TestMergeSectionsCorrupt cuts and scrambles each section of the
// synthetic pair: the walker must return an error that says where, and
// never panic.
func TestMergeSectionsCorrupt(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, version := range []int{4, 5} {
		for _, dwarf64 := range []bool{false, true} {
			m, s := syntheticPair(version, dwarf64, gnuAltForms)
			sections := []struct {
				name string
				b    *[]byte
			}{
				{"main .debug_abbrev", &m.abbrev}, {"main .debug_info", &m.info},
				{"supplementary .debug_abbrev", &s.abbrev}, {"supplementary .debug_info", &s.info},
				{"supplementary .debug_line", &s.line},
			}
			for _, sec := range sections {
				orig := *sec.b
				try := func(what string, data []byte) error {
					*sec.b = data
					defer func() {
						*sec.b = orig
						if p := recover(); p != nil {
							t.Fatalf("v%d 64-bit %v, %s %s (%x): panic: %v", version, dwarf64, sec.name, what, data, p)
						}
					}()
					_, err := mergeSections(m, s, binary.LittleEndian)
					return err
				}
				for n := range len(orig) {
					err := try(fmt.Sprintf("cut to %d bytes", n), orig[:n])
					if n == 0 && strings.HasSuffix(sec.name, "info") || n == 0 && strings.HasSuffix(sec.name, "line") {
						continue // no unit at all is valid
					}
					if err == nil {
						t.Errorf("v%d 64-bit %v: %s cut to %d of %d bytes: no error", version, dwarf64, sec.name, n, len(orig))
					} else if !strings.Contains(err.Error(), ".debug_") {
						t.Errorf("%s cut to %d bytes: error %q does not name the section", sec.name, n, err)
					}
				}
				for i := range 300 {
					data := bytes.Clone(orig)
					for range 1 + i%3 {
						data[rng.Intn(len(data))] = byte(rng.Intn(256))
					}
					try("scrambled", data)
				}
			}
		}
	}
}

func FuzzMergeSections(f *testing.F) {
	for _, forms := range []altForms{gnuAltForms, dwarf5Forms4} {
		m, s := syntheticPair(5, false, forms)
		f.Add(m.abbrev, m.info, s.abbrev, s.info, s.line)
	}
	m, s := syntheticPair(4, true, gnuAltForms)
	f.Add(m.abbrev, m.info, s.abbrev, s.info, s.line)
	f.Fuzz(func(t *testing.T, mAbbrev, mInfo, sAbbrev, sInfo, sLine []byte) {
		m := dwarfBytes{abbrev: mAbbrev, info: mInfo, str: []byte("main\x00")}
		s := dwarfBytes{abbrev: sAbbrev, info: sInfo, str: []byte("int\x00x\x00/src\x00"), line: sLine}
		out, err := mergeSections(m, s, binary.LittleEndian)
		if err == nil && len(out.info) != len(mInfo)+len(sInfo) {
			t.Fatalf("merged .debug_info is %d bytes, want %d", len(out.info), len(mInfo)+len(sInfo))
		}
	})
}

func TestParseDebugSup(t *testing.T) {
	link := (&dwarfWriter{}).u16(5).u8(0).str("/usr/lib/debug/.dwz/x86_64-linux-gnu/nginx.debug").uleb(4).u8(0xde, 0xad, 0xbe, 0xef).b
	sup, name, sum, err := parseDebugSup(link, binary.LittleEndian)
	if err != nil || sup || name != "/usr/lib/debug/.dwz/x86_64-linux-gnu/nginx.debug" || sum != "deadbeef" {
		t.Fatalf("parseDebugSup = %v, %q, %q, %v", sup, name, sum, err)
	}
	for n := range len(link) {
		if _, _, _, err := parseDebugSup(link[:n], binary.LittleEndian); err == nil || !strings.Contains(err.Error(), ".debug_sup") {
			t.Errorf("cut to %d bytes: error %v", n, err)
		}
	}
}
