package symbols_test

import (
	"bufio"
	"debug/dwarf"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// paholeMember is one member line of `pahole -C NAME` output.
type paholeMember struct {
	Name    string
	Bit     int64 // absolute bit offset from the start of the outermost struct
	BitSize int64 // 0 unless a bitfield
	Size    int64 // bytes; for a bitfield, of its declared type
	Line    string
}

type paholeStruct struct {
	Size    int64 // -1 when pahole does not say (it omits it for unions)
	Members []paholeMember
}

var (
	// "<decl>; /* <offset> <size> */" or, for bitfields, "<decl>:<bits>; /* <offset>:<bit> <size> */".
	paholeMemberRE = regexp.MustCompile(`^\s*(.*?);\s*/\*\s*(\d+)(?::\s*(\d+))?\s+(\d+)\s*\*/\s*$`)
	paholeSizeRE   = regexp.MustCompile(`/\* size: (\d+),`)
	paholeFuncPtr  = regexp.MustCompile(`\(\s*\*\s*([A-Za-z_]\w*)\s*(?:\[[^\]]*\])*\s*\)`)
	paholeBitsRE   = regexp.MustCompile(`:\s*(\d+)$`)
	paholeArrayRE  = regexp.MustCompile(`(\s*\[\d*\])+$`)
	paholeIdentRE  = regexp.MustCompile(`([A-Za-z_]\w*)$`)
)

// pahole runs `pahole -C name binary` and parses its layout.
//
// pahole 1.24 prints a bitfield as "/* O:B S */": O is the byte offset of
// the bitfield's storage unit, B the bit within it counted from the least
// significant bit (little endian), S the size of the declared type. So the
// absolute bit offset is O*8+B; TestPaholeBitfieldConvention pins that
// down on ngx_event_t before anything relies on it. Members of anonymous
// structs and unions are printed inline with offsets from the outermost
// struct, like symbols.Members does; named struct members are not expanded.
func pahole(t testing.TB, binary, name string) paholeStruct {
	t.Helper()
	out := run(t, "pahole", "-C", name, binary)
	if !strings.Contains(out, "{") {
		t.Fatalf("pahole -C %s %s: no struct in output:\n%s", name, binary, out)
	}
	ps := paholeStruct{Size: -1}
	sc := bufio.NewScanner(strings.NewReader(out))
	sawSize := false
	for sc.Scan() {
		line := sc.Text()
		if m := paholeSizeRE.FindStringSubmatch(line); m != nil && !sawSize {
			ps.Size, _ = strconv.ParseInt(m[1], 10, 64)
			sawSize = true
			continue
		}
		m := paholeMemberRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		decl := strings.TrimSpace(m[1])
		if strings.HasPrefix(decl, "}") {
			continue // end of an anonymous struct or union
		}
		off, _ := strconv.ParseInt(m[2], 10, 64)
		size, _ := strconv.ParseInt(m[4], 10, 64)
		pm := paholeMember{Bit: off * 8, Size: size, Line: strings.TrimSpace(line)}
		if m[3] != "" {
			bit, _ := strconv.ParseInt(m[3], 10, 64)
			pm.Bit += bit
			bm := paholeBitsRE.FindStringSubmatch(decl)
			if bm == nil {
				t.Fatalf("pahole: bitfield line without a width: %q", line)
			}
			pm.BitSize, _ = strconv.ParseInt(bm[1], 10, 64)
		}
		switch fp := paholeFuncPtr.FindStringSubmatch(decl); {
		case fp != nil:
			pm.Name = fp[1]
		default:
			d := paholeBitsRE.ReplaceAllString(decl, "")
			d = paholeArrayRE.ReplaceAllString(strings.TrimSpace(d), "")
			id := paholeIdentRE.FindStringSubmatch(strings.TrimSpace(d))
			if id == nil {
				t.Fatalf("pahole: no member name in %q", line)
			}
			pm.Name = id[1]
		}
		ps.Members = append(ps.Members, pm)
	}
	if !sawSize && !strings.HasPrefix(out, "union ") {
		t.Fatalf("pahole -C %s %s: no size comment:\n%s", name, binary, out)
	}
	if len(ps.Members) == 0 {
		t.Fatalf("pahole -C %s %s: no members parsed:\n%s", name, binary, out)
	}
	return ps
}

// layoutStats counts what a comparison covered.
type layoutStats struct{ members, bitfields int }

// compareLayout checks that symbols.Members agrees with pahole on every
// named member: bit offset, bit size and size.
func compareLayout(t *testing.T, b *symbols.Binary, typeName string) layoutStats {
	t.Helper()
	typ, err := b.Type(typeName)
	if err != nil {
		t.Fatalf("Type(%q): %v", typeName, err)
	}
	st, ok := symbols.Underlying(typ).(*dwarf.StructType)
	if !ok {
		t.Fatalf("Type(%q) = %T, want a struct or union", typeName, symbols.Underlying(typ))
	}
	if st.StructName == "" {
		t.Fatalf("Type(%q): anonymous %s, pahole needs a tag", typeName, st.Kind)
	}
	ph := pahole(t, b.Path, st.StructName)
	if ph.Size >= 0 && typ.Size() != ph.Size {
		t.Errorf("%s: size %d, pahole says %d", typeName, typ.Size(), ph.Size)
	}
	members, err := symbols.Members(typ)
	if err != nil {
		t.Fatalf("Members(%s): %v", typeName, err)
	}
	byName := map[string]symbols.Member{}
	for _, m := range members {
		if m.Name == "" {
			continue
		}
		if _, dup := byName[m.Name]; dup {
			t.Errorf("%s: member %q listed twice by Members", typeName, m.Name)
		}
		byName[m.Name] = m
	}
	var stats layoutStats
	for _, pm := range ph.Members {
		m, ok := byName[pm.Name]
		if !ok {
			t.Errorf("%s.%s: pahole lists it (%s), Members does not", typeName, pm.Name, pm.Line)
			continue
		}
		delete(byName, pm.Name)
		stats.members++
		if pm.BitSize > 0 {
			stats.bitfields++
		}
		if m.BitOffset != pm.Bit || m.BitSize != pm.BitSize || m.Size != pm.Size {
			t.Errorf("%s.%s: Members says byte %d bit %d, %d bits, size %d; pahole says byte %d bit %d, %d bits, size %d (%s)",
				typeName, pm.Name, m.ByteOffset(), m.BitOffset%8, m.BitSize, m.Size,
				pm.Bit/8, pm.Bit%8, pm.BitSize, pm.Size, pm.Line)
		}
	}
	for name, m := range byName {
		t.Errorf("%s.%s: Members lists it (bit %d), pahole does not", typeName, name, m.BitOffset)
	}
	return stats
}

var nginxLayoutTypes = []string{"ngx_event_t", "ngx_connection_t", "ngx_http_request_t", "ngx_http_upstream_t"}

// TestPaholeBitfieldConvention pins down how this pahole prints bitfield
// offsets, on members whose place does not depend on configure flags.
func TestPaholeBitfieldConvention(t *testing.T) {
	requireTools(t, "pahole")
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	ev := pahole(t, inst.Binary, "ngx_event_s")
	find := func(ps paholeStruct, name string) paholeMember {
		for _, m := range ps.Members {
			if m.Name == name {
				return m
			}
		}
		t.Fatalf("pahole: no member %s", name)
		return paholeMember{}
	}
	// data (8 bytes), then write, accept, ..., complete, eof: one bit each.
	if eof := find(ev, "eof"); eof.Bit/8 != 9 || eof.Bit%8 != 0 || eof.BitSize != 1 {
		t.Fatalf("ngx_event_t.eof from pahole: byte %d bit %d, %d bits; want byte 9 bit 0, 1 bit (%s): pahole's bitfield convention changed",
			eof.Bit/8, eof.Bit%8, eof.BitSize, eof.Line)
	}
	if w, a := find(ev, "write"), find(ev, "accept"); w.Bit != 64 || a.Bit != 65 {
		t.Fatalf("write at bit %d, accept at bit %d: want 64, 65 (LSB first)", w.Bit, a.Bit)
	}
	c := pahole(t, inst.Binary, "ngx_connection_s")
	if n := find(c, "number"); n.Bit != 200*8 || n.BitSize != 0 || n.Size != 8 {
		t.Fatalf("ngx_connection_t.number from pahole: bit %d size %d, want byte 200 size 8 (%s)", n.Bit, n.Size, n.Line)
	}
}

func TestLayoutMatchesPaholeNginx(t *testing.T) {
	requireTools(t, "pahole")
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			inst := nginxtest.Build(t, variant)
			b := openBinary(t, inst.Binary)
			var total layoutStats
			for _, name := range nginxLayoutTypes {
				t.Run(name, func(t *testing.T) {
					s := compareLayout(t, b, name)
					if s.members <= 10 || s.bitfields == 0 {
						t.Errorf("%s: compared %d members, %d bitfields: pahole output not parsed?", name, s.members, s.bitfields)
					}
					total.members += s.members
					total.bitfields += s.bitfields
				})
			}
			t.Logf("%s: %d members (%d bitfields) agree with pahole", variant, total.members, total.bitfields)

			// Layout renders what Members computed: eof is byte 9 bit 0.
			ev, err := b.Type("ngx_event_t")
			if err != nil {
				t.Fatal(err)
			}
			text, err := symbols.Layout(ev)
			if err != nil {
				t.Fatal(err)
			}
			eof := pahole(t, inst.Binary, "ngx_event_s")
			for _, m := range eof.Members {
				if m.Name == "eof" {
					want := fmt.Sprintf("eof:1;\t/* byte %4d bit %d, 1 bits */", m.Bit/8, m.Bit%8)
					if !strings.Contains(text, want) {
						t.Errorf("Layout(ngx_event_t) has no %q:\n%s", want, text)
					}
				}
			}
		})
	}
}

// layoutVariants are the gcc flags the C fixture is built with.
var layoutVariants = []struct {
	name  string
	dwarf int
	flags []string
}{
	{"O2-dwarf4", 4, []string{"-O2", "-gdwarf-4"}},
	{"O2-dwarf5", 5, []string{"-O2", "-gdwarf-5"}},
	{"LTO-dwarf4", 4, []string{"-O2", "-flto", "-gdwarf-4"}},
	{"LTO-dwarf5", 5, []string{"-O2", "-flto", "-gdwarf-5"}},
}

var fixtureLayoutTypes = []string{"struct bits", "packed_bits", "arr_then_bits", "nested", "union top_union", "point_t"}

func TestLayoutMatchesPaholeFixture(t *testing.T) {
	requireTools(t, "gcc", "pahole")
	for _, v := range layoutVariants {
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "layout.c", v.flags...)
			b := openBinary(t, bin)
			var total layoutStats
			for _, name := range fixtureLayoutTypes {
				t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
					s := compareLayout(t, b, name)
					total.members += s.members
					total.bitfields += s.bitfields
				})
			}
			if total.bitfields < 20 {
				t.Errorf("compared only %d bitfields", total.bitfields)
			}
			t.Logf("%d members (%d bitfields) agree with pahole", total.members, total.bitfields)
		})
	}
}

// TestLayoutFixtureDWARFForms checks with readelf that the fixture really
// exercises both ways DWARF places a bitfield: DW_AT_bit_offset (counted
// from the most significant bit of a storage unit; DWARF 2-4) and
// DW_AT_data_bit_offset (from the start of the struct; DWARF 5).
func TestLayoutFixtureDWARFForms(t *testing.T) {
	requireTools(t, "gcc", "readelf")
	for _, v := range layoutVariants {
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "layout.c", v.flags...)
			info := run(t, "readelf", "--debug-dump=info", bin)
			if !strings.Contains(info, fmt.Sprintf("Version:       %d\n", v.dwarf)) {
				t.Fatalf("readelf: no DWARF %d unit in %s", v.dwarf, bin)
			}
			for _, member := range []string{"straddle", "after_char", "sneg", "s2"} {
				attrs := readelfDIE(t, info, "DW_TAG_member", member)
				hasOld := strings.Contains(attrs, "DW_AT_bit_offset")
				hasNew := strings.Contains(attrs, "DW_AT_data_bit_offset")
				switch {
				case v.dwarf == 4 && (!hasOld || hasNew):
					t.Errorf("DWARF 4 member %s: want DW_AT_bit_offset only:\n%s", member, attrs)
				case v.dwarf == 5 && (hasOld || !hasNew):
					t.Errorf("DWARF 5 member %s: want DW_AT_data_bit_offset only:\n%s", member, attrs)
				}
				if v.dwarf == 4 && member == "straddle" && !strings.Contains(attrs, "DW_AT_bit_offset  : -") {
					t.Errorf("packed straddling member %s: want a negative DW_AT_bit_offset:\n%s", member, attrs)
				}
			}
		})
	}
}

var readelfDIERE = regexp.MustCompile(`(?m)^\s*<\d+><[0-9a-f]+>: Abbrev Number: \d+ \((DW_TAG_\w+)\)$`)

// readelfDIE returns the attribute lines of the first DIE with tag and name
// in `readelf --debug-dump=info` output.
func readelfDIE(t *testing.T, info, tag, name string) string {
	t.Helper()
	locs := readelfDIERE.FindAllStringSubmatchIndex(info, -1)
	nameRE := regexp.MustCompile(`DW_AT_name\s*:\s*(?:\(indirect string, offset: 0x[0-9a-f]+\): )?` + regexp.QuoteMeta(name) + `\n`)
	for i, loc := range locs {
		if info[loc[2]:loc[3]] != tag {
			continue
		}
		end := len(info)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		die := info[loc[0]:end]
		if nameRE.MatchString(die) {
			return die
		}
	}
	t.Fatalf("readelf: no %s named %s", tag, name)
	return ""
}
