package symbols_test

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// cloneVariants are the builds of testdata/clones.c. The DWARF 4 one is
// not PIE, so that file offsets differ from addresses, and its location
// lists are in .debug_loc rather than .debug_loclists.
var cloneVariants = []struct {
	name  string
	flags []string
}{
	{"O2", []string{"-O2", "-g"}},
	{"LTO", []string{"-O2", "-flto", "-g"}},
	{"O2-dwarf4-nopie", []string{"-O2", "-gdwarf-4", "-no-pie"}},
}

// fixtureFuncs are the C functions of clones.c.
var fixtureFuncs = []string{"isra_sum", "constprop_mul", "part_work", "report_error", "hot_path", "inline_twice", "exported_entry", "stack_args", "main"}

// nmSymbol is a defined text symbol as nm lists it.
type nmSymbol struct {
	Name string
	Addr uint64
	Size uint64
}

// nmText lists a binary's text symbols (t, T) with `nm -S --defined-only`.
func nmText(t testing.TB, bin string) []nmSymbol {
	t.Helper()
	var out []nmSymbol
	for _, line := range strings.Split(run(t, "nm", "-S", "--defined-only", bin), "\n") {
		f := strings.Fields(line)
		var s nmSymbol
		switch len(f) {
		case 4: // addr size type name
			s.Size, _ = strconv.ParseUint(f[1], 16, 64)
			f = []string{f[0], f[2], f[3]}
		case 3: // addr type name
		default:
			continue
		}
		if f[1] != "t" && f[1] != "T" {
			continue
		}
		s.Addr, _ = strconv.ParseUint(f[0], 16, 64)
		s.Name = f[2]
		out = append(out, s)
	}
	return out
}

type loadSegment struct{ off, vaddr, filesz uint64 }

var readelfLoadRE = regexp.MustCompile(`(?m)^\s*LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x[0-9a-f]+`)

// fileOffsetReadelf maps an address to a file offset with the PT_LOAD
// program headers that `readelf -lW` prints.
func fileOffsetReadelf(t testing.TB, bin string) func(uint64) (uint64, bool) {
	t.Helper()
	var segs []loadSegment
	for _, m := range readelfLoadRE.FindAllStringSubmatch(run(t, "readelf", "-lW", bin), -1) {
		var s loadSegment
		s.off, _ = strconv.ParseUint(m[1], 16, 64)
		s.vaddr, _ = strconv.ParseUint(m[2], 16, 64)
		s.filesz, _ = strconv.ParseUint(m[3], 16, 64)
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		t.Fatalf("readelf -lW %s: no LOAD segment", bin)
	}
	return func(addr uint64) (uint64, bool) {
		for _, s := range segs {
			if addr >= s.vaddr && addr < s.vaddr+s.filesz {
				return addr - s.vaddr + s.off, true
			}
		}
		return 0, false
	}
}

// checkInstances compares Lookup(name) with nm: every text symbol whose C
// name is name, except .cold parts, with its address, size and file offset.
func checkInstances(t *testing.T, b *symbols.Binary, syms []nmSymbol, fileOff func(uint64) (uint64, bool), name string) []*symbols.Function {
	t.Helper()
	want := map[string]nmSymbol{}
	for _, s := range syms {
		if symbols.BaseName(s.Name) == name && !strings.Contains(s.Name, ".cold") {
			want[s.Name] = s
		}
	}
	fns, err := b.Lookup(name)
	if err != nil {
		t.Errorf("Lookup(%q): %v (nm has %v)", name, err, keys(want))
		return nil
	}
	got := map[string]bool{}
	for _, fn := range fns {
		got[fn.Symbol] = true
		if strings.Contains(fn.Symbol, ".cold") {
			t.Errorf("Lookup(%q) returned cold part %s as an instance", name, fn.Symbol)
		}
		if fn.Name != name {
			t.Errorf("Lookup(%q): instance %s has Name %q", name, fn.Symbol, fn.Name)
		}
		if fn.IsClone() != (fn.Symbol != name) {
			t.Errorf("%s: IsClone() = %v", fn.Symbol, fn.IsClone())
		}
		s, ok := want[fn.Symbol]
		if !ok {
			t.Errorf("Lookup(%q) returned %s at %#x, which nm does not list", name, fn.Symbol, fn.Address)
			continue
		}
		if fn.Address != s.Addr || fn.Size != s.Size {
			t.Errorf("%s: address %#x size %d, nm says %#x size %d", fn.Symbol, fn.Address, fn.Size, s.Addr, s.Size)
		}
		off, ok := fileOff(s.Addr)
		if !ok {
			t.Errorf("%s at %#x: in no PT_LOAD segment per readelf", fn.Symbol, s.Addr)
		} else if fn.Offset != off {
			t.Errorf("%s: Offset %#x, readelf's PT_LOAD gives %#x", fn.Symbol, fn.Offset, off)
		}
		if fo, err := b.FileOffset(fn.Address); err != nil || fo != fn.Offset {
			t.Errorf("%s: FileOffset(%#x) = %#x, %v; Offset is %#x", fn.Symbol, fn.Address, fo, err, fn.Offset)
		}
	}
	for sym := range want {
		if !got[sym] {
			t.Errorf("Lookup(%q) misses %s (nm lists it)", name, sym)
		}
	}
	return fns
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestClonesLookup(t *testing.T) {
	requireTools(t, "gcc", "nm", "readelf")
	for _, v := range cloneVariants {
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "clones.c", v.flags...)
			syms := nmText(t, bin)
			names := map[string]bool{}
			for _, s := range syms {
				names[s.Name] = true
			}
			// The fixture is only useful if gcc made the clones.
			for _, want := range []string{"isra_sum.isra.0", "constprop_mul.constprop.0", "part_work.part.0", "inline_twice"} {
				if !names[want] {
					t.Fatalf("gcc %s did not produce %s (nm: %v): testdata/clones.c needs adjusting for this gcc",
						strings.Join(v.flags, " "), want, keys(names))
				}
			}
			var colds []string
			for n := range names {
				if strings.HasSuffix(n, ".cold") {
					colds = append(colds, n)
				}
			}
			if len(colds) == 0 {
				t.Fatalf("gcc %s produced no .cold part (nm: %v)", strings.Join(v.flags, " "), keys(names))
			}

			b := openBinary(t, bin)
			fileOff := fileOffsetReadelf(t, bin)
			for _, name := range fixtureFuncs {
				checkInstances(t, b, syms, fileOff, name)
			}
			for _, cold := range colds {
				if fns, err := b.Lookup(cold); !errors.Is(err, symbols.ErrFunctionNotFound) {
					t.Errorf("Lookup(%q) = %v, %v: a cold part is not an entry point", cold, fns, err)
				}
			}
			all, err := b.Functions("")
			if err != nil {
				t.Fatal(err)
			}
			for _, fn := range all {
				if strings.Contains(fn.Symbol, ".cold") {
					t.Errorf("Functions lists cold part %s as an instance", fn.Symbol)
				}
				if fn.Size > 0 {
					if got := b.Symbolize(fn.Address + fn.Size - 1); got == nil || got.Address != fn.Address {
						t.Errorf("Symbolize(%#x) = %v, want %s", fn.Address+fn.Size-1, got, fn.Symbol)
					}
				}
			}
			for _, s := range syms {
				if strings.HasSuffix(s.Name, ".cold") {
					if got := b.Symbolize(s.Addr); got != nil {
						t.Errorf("Symbolize(%#x) in %s = %s, want nil: not an instance", s.Addr, s.Name, got.Symbol)
					}
				}
			}
			// Out-of-line copy of an inline function: an instance with DWARF.
			fns, err := b.Lookup("inline_twice")
			if err != nil || len(fns) != 1 {
				t.Fatalf("Lookup(inline_twice) = %v, %v", fns, err)
			}
			if ps, err := b.Params(fns[0]); err != nil || len(ps) != 2 || ps[0].Name != "a" || ps[1].Name != "b" {
				t.Errorf("Params(inline_twice) = %v, %v; want a, b", ps, err)
			}
			// An exact clone name selects that instance only.
			for _, exact := range []string{"isra_sum.isra.0", "constprop_mul.constprop.0", "part_work.part.0"} {
				fns, err := b.Lookup(exact)
				if err != nil || len(fns) != 1 || fns[0].Symbol != exact || !fns[0].IsClone() {
					t.Errorf("Lookup(%q) = %v, %v; want just that symbol", exact, fns, err)
				}
			}
			if _, err := b.Lookup("isra_sum.isra.7"); !errors.Is(err, symbols.ErrFunctionNotFound) {
				t.Errorf("Lookup(isra_sum.isra.7): %v, want ErrFunctionNotFound", err)
			}
			if v.name == "O2-dwarf4-nopie" {
				fns, _ := b.Lookup("exported_entry")
				if len(fns) == 1 && fns[0].Offset == fns[0].Address {
					t.Errorf("non-PIE build: Offset == Address %#x, the test does not exercise FileOffset", fns[0].Address)
				}
			}
		})
	}
}

func TestNginxLTOPrivLookup(t *testing.T) {
	requireTools(t, "nm", "readelf")
	for _, c := range []struct{ variant, want string }{
		{nginxtest.VariantO2, "ngx_http_ssl_handshake"},
		{nginxtest.VariantLTO, "ngx_http_ssl_handshake.lto_priv.0"},
	} {
		t.Run(c.variant, func(t *testing.T) {
			inst := nginxtest.Build(t, c.variant)
			b := openBinary(t, inst.Binary)
			syms := nmText(t, inst.Binary)
			fileOff := fileOffsetReadelf(t, inst.Binary)
			fns := checkInstances(t, b, syms, fileOff, "ngx_http_ssl_handshake")
			if len(fns) != 1 || fns[0].Symbol != c.want {
				t.Fatalf("Lookup(ngx_http_ssl_handshake) = %v, want the one instance %s", fns, c.want)
			}
			if got, err := b.Lookup(c.want); err != nil || len(got) != 1 || got[0] != fns[0] {
				t.Errorf("Lookup(%q) = %v, %v", c.want, got, err)
			}
			for _, name := range []string{"ngx_unix_recv", "ngx_http_finalize_request", "ngx_http_ssl_handshake_handler"} {
				checkInstances(t, b, syms, fileOff, name)
			}
		})
	}
}

// gdbLoc is what gdb says about a symbol at a pc: Reg for a register
// (also DW_OP_entry_value(reg) DW_OP_stack_value), Fbreg for DW_OP_fbreg N,
// or Other for anything else (optimized out, a constant, a parameter_ref,
// no range covering the pc).
type gdbLoc struct {
	Reg      string
	Fbreg    *int64
	Other    string
	Describe string
}

var (
	gdbScopeRE  = regexp.MustCompile(`^Scope for \*0x([0-9a-f]+):`)
	gdbSymbolRE = regexp.MustCompile(`^Symbol (\S+) is (.*)$`)
	gdbRangeRE  = regexp.MustCompile(`Range 0x([0-9a-f]+)-0x([0-9a-f]+): `)
	gdbRegRE    = regexp.MustCompile(`^a variable in \$(\w+)`)
	gdbOpRE     = regexp.MustCompile(`(?m)^\s*\d+: (DW_OP_\w+)(?: (-?\d+))?(?: \[\$(\w+)\])?`)
)

// gdbScopes runs `info scope *ADDR` for every address in one gdb and
// returns, per address, what gdb says each symbol is at that address.
func gdbScopes(t testing.TB, bin string, addrs []uint64) map[uint64]map[string]gdbLoc {
	t.Helper()
	args := []string{"-batch", "-nx"}
	for _, a := range addrs {
		args = append(args, "-ex", fmt.Sprintf("info scope *%#x", a))
	}
	out := run(t, "gdb", append(args, bin)...)
	res := map[uint64]map[string]gdbLoc{}
	var pc uint64
	var name string
	var text []string
	flush := func() {
		if name != "" {
			res[pc][name] = classifyGDB(pc, strings.Join(text, "\n"))
		}
		name, text = "", nil
	}
	for _, line := range strings.Split(out, "\n") {
		if m := gdbScopeRE.FindStringSubmatch(line); m != nil {
			flush()
			pc, _ = strconv.ParseUint(m[1], 16, 64)
			res[pc] = map[string]gdbLoc{}
			continue
		}
		if m := gdbSymbolRE.FindStringSubmatch(line); m != nil {
			flush()
			name, text = m[1], []string{m[2]}
			continue
		}
		if name != "" {
			text = append(text, line)
		}
	}
	flush()
	for _, a := range addrs {
		if _, ok := res[a]; !ok {
			t.Fatalf("gdb: no scope for %#x in:\n%s", a, out)
		}
	}
	return res
}

// classifyGDB reads gdb's description of a symbol at pc.
func classifyGDB(pc uint64, text string) gdbLoc {
	desc := text
	if strings.HasPrefix(text, "multi-location:") {
		desc = ""
		rs := gdbRangeRE.FindAllStringSubmatchIndex(text, -1)
		for i, r := range rs {
			lo, _ := strconv.ParseUint(text[r[2]:r[3]], 16, 64)
			hi, _ := strconv.ParseUint(text[r[4]:r[5]], 16, 64)
			if pc < lo || pc >= hi {
				continue
			}
			end := len(text)
			if i+1 < len(rs) {
				end = rs[i+1][0]
			}
			desc = text[r[1]:end]
			if j := strings.Index(desc, "Base address"); j >= 0 {
				desc = desc[:j]
			}
			break
		}
		if desc == "" {
			return gdbLoc{Other: "no range covers the pc", Describe: text}
		}
	}
	desc = strings.TrimSpace(desc)
	if i := strings.LastIndex(desc, ", length"); i >= 0 {
		desc = strings.TrimSpace(desc[:i])
	}
	if m := gdbRegRE.FindStringSubmatch(desc); m != nil {
		return gdbLoc{Reg: m[1], Describe: desc}
	}
	if strings.HasPrefix(desc, "a complex DWARF expression:") {
		ops := gdbOpRE.FindAllStringSubmatch(desc, -1)
		switch {
		case len(ops) == 3 && (ops[0][1] == "DW_OP_entry_value" || ops[0][1] == "DW_OP_GNU_entry_value") &&
			strings.HasPrefix(ops[1][1], "DW_OP_reg") && ops[1][3] != "" && ops[2][1] == "DW_OP_stack_value":
			// The register's value at entry: the register itself there.
			return gdbLoc{Reg: ops[1][3], Describe: desc}
		case len(ops) == 1 && ops[0][1] == "DW_OP_fbreg":
			n, _ := strconv.ParseInt(ops[0][2], 10, 64)
			return gdbLoc{Fbreg: &n, Describe: desc}
		}
	}
	return gdbLoc{Other: desc, Describe: desc}
}

// checkParamsAgainstGDB compares Params of each instance with gdb's view at
// the instance's entry address. It returns the instances' parameters.
func checkParamsAgainstGDB(t *testing.T, b *symbols.Binary, fns []*symbols.Function) map[string][]symbols.Param {
	t.Helper()
	var addrs []uint64
	for _, fn := range fns {
		addrs = append(addrs, fn.Address)
	}
	scopes := gdbScopes(t, b.Path, addrs)
	out := map[string][]symbols.Param{}
	compared := 0
	for _, fn := range fns {
		params, err := b.Params(fn)
		if err != nil {
			t.Errorf("Params(%s): %v", fn.Symbol, err)
			continue
		}
		out[fn.Symbol] = params
		gdb := scopes[fn.Address]
		for _, p := range params {
			g, listed := gdb[p.Name]
			t.Logf("%s(%s): Params %v, err %v; gdb: %s", fn.Symbol, p.Name, p.Location, p.Err, strings.Join(strings.Fields(g.Describe), " "))
			compared++
			switch {
			case !listed || g.Other != "":
				if !errors.Is(p.Err, symbols.ErrNoLocation) {
					t.Errorf("%s(%s): Params says %v (err %v); gdb: %q, so want an error wrapping ErrNoLocation",
						fn.Symbol, p.Name, p.Location, p.Err, g.Describe)
				}
			case g.Reg != "":
				if p.Err != nil || p.Location.Kind != symbols.InRegister || p.Location.String() != g.Reg {
					t.Errorf("%s(%s): Params says %v (err %v); gdb says register %s", fn.Symbol, p.Name, p.Location, p.Err, g.Reg)
				}
			case g.Fbreg != nil:
				// The frame base is DW_OP_call_frame_cfa; where it is
				// at entry is checked by running gdb (TestStackParamsGDB).
				if p.Err != nil || p.Location.Kind != symbols.InMemory || p.Location.Reg != symbols.RegRSP {
					t.Errorf("%s(%s): Params says %v (err %v); gdb says DW_OP_fbreg %d", fn.Symbol, p.Name, p.Location, p.Err, *g.Fbreg)
				}
			}
			delete(gdb, p.Name)
		}
	}
	if compared < len(fns) {
		t.Errorf("compared only %d parameters of %d instances", compared, len(fns))
	}
	return out
}

func TestParamsMatchGDBFixture(t *testing.T) {
	requireTools(t, "gcc", "gdb")
	for _, v := range cloneVariants {
		t.Run(v.name, func(t *testing.T) {
			b := openBinary(t, buildFixture(t, "clones.c", v.flags...))
			var fns []*symbols.Function
			for _, name := range fixtureFuncs {
				f, err := b.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				fns = append(fns, f...)
			}
			params := checkParamsAgainstGDB(t, b, fns)

			// isra_sum.isra.0 gets c->number instead of c: c has no
			// location, k moved to another register.
			isra := params["isra_sum.isra.0"]
			byName := map[string]symbols.Param{}
			for _, p := range isra {
				byName[p.Name] = p
			}
			if c, ok := byName["c"]; !ok || !errors.Is(c.Err, symbols.ErrNoLocation) {
				t.Errorf("isra_sum.isra.0: parameter c = %+v, want an error wrapping ErrNoLocation", c)
			}
			if k, ok := byName["k"]; !ok || k.Err != nil || k.Location.Kind != symbols.InRegister {
				t.Errorf("isra_sum.isra.0: parameter k = %+v, want a register", k)
			}
			// constprop_mul.constprop.0 dropped unused and mode.
			var dropped []string
			for _, p := range params["constprop_mul.constprop.0"] {
				if errors.Is(p.Err, symbols.ErrNoLocation) {
					dropped = append(dropped, p.Name)
					if !strings.Contains(p.Err.Error(), "constprop_mul.constprop.0") {
						t.Errorf("error does not name the instance: %v", p.Err)
					}
				}
			}
			if strings.Join(dropped, ",") != "unused,mode" {
				t.Errorf("constprop_mul.constprop.0: parameters without location %v, want [unused mode]", dropped)
			}
		})
	}
}

func TestParamsMatchGDBNginx(t *testing.T) {
	requireTools(t, "gdb")
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			inst := nginxtest.Build(t, variant)
			b := openBinary(t, inst.Binary)
			var fns []*symbols.Function
			for _, name := range []string{"ngx_unix_recv", "ngx_http_finalize_request", "ngx_http_ssl_handshake", "ngx_http_process_request_line", "ngx_event_accept"} {
				f, err := b.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				fns = append(fns, f...)
			}
			// And GCC's clones, whose arguments may be rewritten or dropped.
			all, err := b.Functions("")
			if err != nil {
				t.Fatal(err)
			}
			clones := 0
			for _, fn := range all {
				if clones < 60 && fn.IsClone() && regexp.MustCompile(`\.(isra|constprop|part)\.`).MatchString(fn.Symbol) {
					fns = append(fns, fn)
					clones++
				}
			}
			if clones < 10 {
				t.Errorf("only %d .isra/.constprop/.part instances in nginx %s", clones, variant)
			}
			params := checkParamsAgainstGDB(t, b, fns)
			for sym, want := range map[string]string{"ngx_unix_recv": "c buf size", "ngx_http_finalize_request": "r rc"} {
				var got []string
				for _, p := range params[sym] {
					if p.Err == nil {
						got = append(got, p.Name)
					}
				}
				if strings.Join(got, " ") != want {
					t.Errorf("%s: parameters with a location %v, want %s", sym, got, want)
				}
			}
		})
	}
}

var gdbValueRE = regexp.MustCompile(`(?m)^\$(\d+) = 0x([0-9a-f]+)$`)

// TestStackParamsGDB runs the fixture under gdb, stops at the entry of
// stack_args (arguments g and h are on the stack) and compares where gdb
// finds them with Params' [rsp+N].
func TestStackParamsGDB(t *testing.T) {
	requireTools(t, "gcc", "gdb")
	for _, v := range cloneVariants {
		if v.name == "LTO" {
			continue // stack_args is a .constprop clone there
		}
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "clones.c", v.flags...)
			b := openBinary(t, bin)
			fns, err := b.Lookup("stack_args")
			if err != nil || len(fns) != 1 {
				t.Fatalf("Lookup(stack_args) = %v, %v", fns, err)
			}
			params, err := b.Params(fns[0])
			if err != nil {
				t.Fatal(err)
			}
			out := run(t, "gdb", "-batch", "-nx", "-ex", "break *stack_args", "-ex", "run",
				"-ex", "p/x $rsp", "-ex", "p/x &g", "-ex", "p/x &h", "-ex", "kill", bin)
			vals := gdbValueRE.FindAllStringSubmatch(out, -1)
			if len(vals) != 3 {
				skipOrFail(t, "gdb could not run %s to stack_args (ptrace not allowed?):\n%s", bin, out)
			}
			var v [3]uint64
			for i := range v {
				v[i], _ = strconv.ParseUint(vals[i][2], 16, 64)
			}
			want := map[string]int64{"g": int64(v[1] - v[0]), "h": int64(v[2] - v[0])}
			for _, p := range params {
				off, ok := want[p.Name]
				if !ok {
					if p.Err != nil || p.Location.Kind != symbols.InRegister {
						t.Errorf("stack_args(%s) = %v, %v; want a register", p.Name, p.Location, p.Err)
					}
					continue
				}
				wantLoc := symbols.Location{Kind: symbols.InMemory, Reg: symbols.RegRSP, Offset: off}
				if p.Err != nil || p.Location != wantLoc {
					t.Errorf("stack_args(%s) = %v, %v; gdb finds it at %v", p.Name, p.Location, p.Err, wantLoc)
				}
			}
		})
	}
}
