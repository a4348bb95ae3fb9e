package symbols_test

import (
	"bufio"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// inlinedFuncs are close-path functions of nginx 1.22.1 and the inlined
// copies each has in the test builds (both the same): ngx_http_close_request
// is inlined into ngx_http_terminate_handler, ngx_http_finalize_connection
// twice into ngx_http_finalize_request, ngx_event_del_timer (a static
// inline of ngx_event_timer.h, with no out-of-line copy) about a hundred
// times, some of them inside inlined copies of ngx_event_add_timer; the
// others have none.
var inlinedFuncs = []struct {
	name    string
	min     int // inlined copies, at least
	nested  bool
	noCopy  bool // no out-of-line instance
	checkPs bool // compare the copies' parameters with gdb
}{
	{name: "ngx_http_close_request", min: 1, checkPs: true},
	{name: "ngx_http_finalize_connection", min: 2, checkPs: true},
	{name: "ngx_event_del_timer", min: 90, nested: true, noCopy: true, checkPs: true},
	{name: "ngx_connection_error", min: 1},
	{name: "ngx_http_close_connection"},
	{name: "ngx_close_connection"},
	{name: "ngx_http_free_request"},
}

var gdbBreakRE = regexp.MustCompile(`(?m)^(\d+)(?:\.\d+)?\s+(?:breakpoint\s+keep\s+y\s+|y\s+)0x([0-9a-f]+) in `)

// gdbBreakAddrs asks gdb, with every symbol table read (LTO units are
// found lazily otherwise), where `break NAME` puts its locations, for
// each name; the names of a function's .isra/.lto_priv instances are
// needed besides its C name, because gdb names an instance whose DWARF
// has a DW_AT_linkage_name after it.
func gdbBreakAddrs(t *testing.T, bin string, names []string) map[uint64]bool {
	t.Helper()
	args := []string{"-batch", "-nx", "-ex", "maint expand-symtabs"}
	for _, n := range names {
		args = append(args, "-ex", "break "+n)
	}
	args = append(args, "-ex", "info breakpoints", bin)
	out := run(t, "gdb", args...)
	addrs := map[uint64]bool{}
	for _, m := range gdbBreakRE.FindAllStringSubmatch(out, -1) {
		a, _ := strconv.ParseUint(m[2], 16, 64)
		addrs[a] = true
	}
	if len(addrs) == 0 {
		t.Fatalf("gdb found no location for %v:\n%s", names, out)
	}
	return addrs
}

// TestInlinedInstancesMatchGDB: a function's out-of-line instances and
// inlined copies are the places where gdb's breakpoint on it stops. gdb
// 13 puts an inlined copy's location at the start of the copy's first
// range (Low); the entry itself, DW_AT_entry_pc, is checked against
// readelf in TestInlinedEntryMatchesReadelf.
func TestInlinedInstancesMatchGDB(t *testing.T) {
	requireTools(t, "gdb")
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			for _, f := range inlinedFuncs {
				fns, err := b.Lookup(f.name)
				if f.noCopy != (err != nil) {
					t.Errorf("Lookup(%s) = %d instances, %v", f.name, len(fns), err)
				}
				ins, err := b.InlinedInstances(f.name)
				if err != nil {
					t.Fatalf("InlinedInstances(%s): %v", f.name, err)
				}
				if len(ins) < f.min || f.min == 0 && len(ins) != 0 {
					t.Errorf("%s: %d inlined copies, want at least %d (none when 0)", f.name, len(ins), f.min)
				}
				if u := b.UnplacedInlines(f.name); len(u) > 0 {
					t.Errorf("%s: copies outside every function: %#x", f.name, u)
				}
				names := []string{f.name}
				ours := map[uint64]string{}
				for _, fn := range fns {
					if fn.IsClone() {
						names = append(names, fn.Symbol)
					}
					ours[fn.Address] = fn.Symbol
				}
				nested := 0
				for _, in := range ins {
					if in.Name != f.name || in.Function == nil || in.Address < in.Function.Address || in.Address >= in.Function.Address+in.Function.Size || in.Offset != in.Address-in.Function.Address {
						t.Errorf("%s: copy %s at %#x: not inside its function %+v", f.name, in.String(), in.Address, in.Function)
					}
					if in.Caller == "" || in.Line == 0 || in.File == "" {
						t.Errorf("%s: copy at %#x has no call site: %s", f.name, in.Address, in.String())
					}
					if in.Depth > 1 {
						nested++
					}
					ours[in.Low] = in.String()
				}
				if f.nested && nested == 0 {
					t.Errorf("%s: no copy inlined into another inlined copy", f.name)
				}
				gdb := gdbBreakAddrs(t, b.Path, names)
				for a, what := range ours {
					if !gdb[a] {
						t.Errorf("%s: %#x (%s) is not one of gdb's locations", f.name, a, what)
					}
				}
				for a := range gdb {
					if _, ok := ours[a]; !ok {
						t.Errorf("%s: gdb breaks at %#x (%s), which is neither an instance nor an inlined copy", f.name, a, symbolOf(b, a))
					}
				}
				t.Logf("%s: %d out-of-line, %d inlined (%d nested); gdb: %d locations", f.name, len(fns), len(ins), nested, len(gdb))
			}
		})
	}
}

func symbolOf(b *symbols.Binary, a uint64) string {
	if fn := b.Symbolize(a); fn != nil {
		return fmt.Sprintf("%s+%#x", fn.Symbol, a-fn.Address)
	}
	return "no symbol"
}

// inlDIE is what readelf --debug-dump=info prints of one DIE.
type inlDIE struct {
	tag              string
	name             string
	origin           uint64
	entry, low       uint64
	hasEntry, hasLow bool
	hasRanges        bool
}

var (
	readelfInlDIERE = regexp.MustCompile(`^\s*<\d+><([0-9a-f]+)>: Abbrev Number: \d+ \((DW_TAG_\w+)\)`)
	readelfAttrRE   = regexp.MustCompile(`^\s*<[0-9a-f]+>\s+(DW_AT_\w+)\s*: (.*)$`)
	readelfHexRE    = regexp.MustCompile(`(?:0x)?([0-9a-f]+)\s*$`)
	readelfRefRE    = regexp.MustCompile(`<0x([0-9a-f]+)>`)
)

// inlDIEs reads every DIE of bin that has a name, an origin or code.
func inlDIEs(t *testing.T, bin string) map[uint64]*inlDIE {
	t.Helper()
	cmd := exec.Command("readelf", "--debug-dump=info", bin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dies := map[uint64]*inlDIE{}
	var cur *inlDIE
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := readelfInlDIERE.FindStringSubmatch(line); m != nil {
			off, _ := strconv.ParseUint(m[1], 16, 64)
			cur = &inlDIE{tag: m[2]}
			dies[off] = cur
			continue
		}
		if cur == nil {
			continue
		}
		m := readelfAttrRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		val := strings.TrimSpace(m[2])
		hex := func() uint64 {
			h := readelfHexRE.FindStringSubmatch(val)
			if h == nil {
				t.Fatalf("readelf: no address in %q", line)
			}
			v, _ := strconv.ParseUint(h[1], 16, 64)
			return v
		}
		switch m[1] {
		case "DW_AT_name":
			if i := strings.LastIndex(val, "): "); strings.HasPrefix(val, "(") && i >= 0 {
				val = val[i+3:]
			}
			cur.name = val
		case "DW_AT_abstract_origin", "DW_AT_specification":
			if r := readelfRefRE.FindStringSubmatch(val); r != nil {
				cur.origin, _ = strconv.ParseUint(r[1], 16, 64)
			}
		case "DW_AT_entry_pc":
			cur.entry, cur.hasEntry = hex(), true
		case "DW_AT_low_pc":
			cur.low, cur.hasLow = hex(), true
		case "DW_AT_ranges":
			cur.hasRanges = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("readelf --debug-dump=info %s: %v", bin, err)
	}
	for off, d := range dies {
		if d.name == "" && d.origin == 0 && !d.hasLow && !d.hasRanges {
			delete(dies, off)
		}
	}
	return dies
}

// TestInlinedEntryMatchesReadelf: each inlined copy of a function in
// readelf's dump is one InlinedInstance, whose Address is the copy's
// DW_AT_entry_pc (else its DW_AT_low_pc, else the start of its first
// range).
func TestInlinedEntryMatchesReadelf(t *testing.T) {
	requireTools(t, "readelf")
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			dies := inlDIEs(t, b.Path)
			nameOf := func(d *inlDIE) string {
				for range 4 {
					if d.name != "" || d.origin == 0 {
						return d.name
					}
					if d = dies[d.origin]; d == nil {
						return ""
					}
				}
				return ""
			}
			want := map[string][]*inlDIE{}
			for _, d := range dies {
				if d.tag == "DW_TAG_inlined_subroutine" && (d.hasLow || d.hasRanges) {
					want[nameOf(d)] = append(want[nameOf(d)], d)
				}
			}
			for _, f := range inlinedFuncs {
				ins, err := b.InlinedInstances(f.name)
				if err != nil {
					t.Fatal(err)
				}
				// Copies with the same entry are one breakpoint (with -flto,
				// a part GCC split off a function is inlined at the
				// entry of each copy of it): compare distinct entries.
				known := map[uint64]bool{}
				rangesOnly, withEntry := 0, 0
				for _, d := range want[f.name] {
					switch {
					case d.hasEntry:
						known[d.entry] = true
						withEntry++
					case d.hasLow:
						known[d.low] = true
					default:
						rangesOnly++
					}
				}
				got := map[uint64]bool{}
				for _, in := range ins {
					got[in.Address] = true
					if !known[in.Address] && in.Low != in.Address {
						t.Errorf("%s: copy at %#x: no DW_AT_entry_pc or DW_AT_low_pc in readelf has that address, and it is not the copy's first address %#x", f.name, in.Address, in.Low)
					}
				}
				for a := range known {
					if !got[a] {
						t.Errorf("%s: readelf's copy with entry %#x is not an instance", f.name, a)
					}
				}
				n := len(ins) + len(b.UnplacedInlines(f.name))
				if len(got) != len(ins) || n < len(known) || n > len(known)+rangesOnly {
					t.Errorf("%s: %d copies (%d distinct entries, %d unplaced); readelf: %d entries from entry_pc or low_pc, %d copies with ranges only", f.name, len(ins), len(got), n-len(ins), len(known), rangesOnly)
				}
				if len(want[f.name]) > 0 && withEntry == 0 {
					t.Errorf("%s: no copy has a DW_AT_entry_pc: the entry is not tested", f.name)
				}
			}
		})
	}
}

var gdbConstRE = regexp.MustCompile(`^a constant with value (-?\d+)`)

// gdbInlinedScopes is gdbScopes keeping, per symbol, the first one gdb
// lists: the innermost, the copy's own, when the function it is inlined
// into has a symbol of the same name.
func gdbInlinedScopes(t *testing.T, bin string, addrs []uint64) map[uint64]map[string]string {
	t.Helper()
	args := []string{"-batch", "-nx"}
	for _, a := range addrs {
		args = append(args, "-ex", fmt.Sprintf("info scope *%#x", a))
	}
	out := run(t, "gdb", append(args, bin)...)
	res := map[uint64]map[string]string{}
	var pc uint64
	var name string
	var text []string
	flush := func() {
		if _, dup := res[pc][name]; name != "" && !dup {
			res[pc][name] = strings.Join(text, "\n")
		}
		name, text = "", nil
	}
	for _, line := range strings.Split(out, "\n") {
		if m := gdbScopeRE.FindStringSubmatch(line); m != nil {
			flush()
			pc, _ = strconv.ParseUint(m[1], 16, 64)
			res[pc] = map[string]string{}
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
	return res
}

// TestInlinedParamsMatchGDB: the parameters of each inlined copy, at its
// entry, are where gdb says they are there: a register or a constant, or
// unavailable when gdb finds the value optimized out, in memory, or only
// as an expression of the entry values of the function holding the copy
// (which a probe inside that function cannot read).
func TestInlinedParamsMatchGDB(t *testing.T) {
	requireTools(t, "gdb")
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			var all []symbols.InlinedInstance
			var addrs []uint64
			for _, f := range inlinedFuncs {
				if !f.checkPs {
					continue
				}
				ins, err := b.InlinedInstances(f.name)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range ins {
					all = append(all, in)
					addrs = append(addrs, in.Address)
				}
			}
			scopes := gdbInlinedScopes(t, b.Path, addrs)
			kinds := map[string]int{}
			for _, in := range all {
				gdb := scopes[in.Address]
				if gdb == nil {
					t.Errorf("gdb: no scope at %#x", in.Address)
					continue
				}
				if _, ok := gdb[in.Name]; !ok {
					t.Errorf("%s: gdb's scope at %#x is not the copy's (no symbol %s): %v", in.String(), in.Address, in.Name, keys(gdb))
					continue
				}
				for _, p := range in.Params {
					text, listed := gdb[p.Name]
					g := classifyGDB(in.Address, text)
					desc := strings.Join(strings.Fields(g.Describe), " ")
					if !listed {
						desc = "not listed"
					}
					switch {
					case listed && g.Reg != "" && gdbRegRE.MatchString(strings.TrimSpace(g.Describe)):
						kinds["register"]++
						if p.Err != nil || p.Location.Kind != symbols.InRegister || p.Location.String() != g.Reg {
							t.Errorf("%s: %s = %v (err %v); gdb: %s", in.String(), p.Name, p.Location, p.Err, desc)
						}
					case listed && gdbConstRE.MatchString(desc):
						kinds["constant"]++
						n, _ := strconv.ParseInt(gdbConstRE.FindStringSubmatch(desc)[1], 10, 64)
						if p.Err != nil || p.Location.Kind != symbols.Constant || p.Location.Offset != n {
							t.Errorf("%s: %s = %v (err %v); gdb: %s", in.String(), p.Name, p.Location, p.Err, desc)
						}
					case listed && strings.HasPrefix(desc, "a complex DWARF expression:") && !strings.Contains(desc, "entry_value") && breg(g.Describe) != nil:
						// DW_OP_bregN K: in memory at register N + K;
						// with DW_OP_stack_value, the value N + K.
						op := breg(g.Describe)
						kind := symbols.InMemory
						if strings.HasSuffix(desc, "DW_OP_stack_value") {
							kind = symbols.RegisterPlusOffset
						}
						kinds["register-relative"]++
						if p.Err != nil || p.Location.Kind != kind || symbols.RegName(p.Location.Reg) != op[3] || fmt.Sprint(p.Location.Offset) != op[2] {
							t.Errorf("%s: %s = %v (err %v); gdb: %s", in.String(), p.Name, p.Location, p.Err, desc)
						}
					default:
						kinds["unavailable"]++
						if !errors.Is(p.Err, symbols.ErrNoLocation) {
							t.Errorf("%s: %s = %v (err %v); gdb: %s, so want an error wrapping ErrNoLocation", in.String(), p.Name, p.Location, p.Err, desc)
						}
						if !listed && !strings.Contains(fmt.Sprint(p.Err), "optimized out at this inlined site") {
							t.Errorf("%s: %s has no entry in the copy; the error should say so: %v", in.String(), p.Name, p.Err)
						}
					}
					t.Logf("%s: %s = %v (err %v); gdb: %s", in.String(), p.Name, p.Location, p.Err, desc)
				}
			}
			// Both outcomes occur among these copies: a register (r of
			// ngx_http_close_request in rbx) and an argument that is gone
			// (r of the second copy of ngx_http_finalize_connection).
			if kinds["register"] == 0 || kinds["unavailable"] == 0 || kinds["constant"] == 0 {
				t.Errorf("parameters compared by kind: %v; want registers, constants and unavailable ones", kinds)
			}
			t.Logf("%d copies, parameters by kind: %v", len(all), kinds)
		})
	}
}

// breg returns gdb's DW_OP_bregN operation when it is the first of a
// location expression of at most two (DW_OP_stack_value may follow).
func breg(desc string) []string {
	ops := gdbOpRE.FindAllStringSubmatch(desc, -1)
	if len(ops) == 0 || len(ops) > 2 || !strings.HasPrefix(ops[0][1], "DW_OP_breg") || ops[0][3] == "" || len(ops) == 2 && ops[1][1] != "DW_OP_stack_value" {
		return nil
	}
	return ops[0]
}

// TestInlinedSplitPart: GCC split ngx_connection_error and inlined the
// part back into the function itself (gdb lists it as a second
// location, at line 1487, the function's own); with -flto it also
// inlined the whole function into its callers, ngx_unix_recv among them.
func TestInlinedSplitPart(t *testing.T) {
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			ins, err := b.InlinedInstances("ngx_connection_error")
			if err != nil {
				t.Fatal(err)
			}
			split, recv := 0, 0
			for _, in := range ins {
				if in.IsSplitPart() {
					split++
					if in.Caller != "ngx_connection_error" || in.Line != in.DeclLine || in.DeclFile != "src/core/ngx_connection.c" {
						t.Errorf("split part %s: declared at %s:%d", in.String(), in.DeclFile, in.DeclLine)
					}
				}
				if in.Caller == "ngx_unix_recv" {
					recv++
					if in.IsSplitPart() {
						t.Errorf("%s is a call in the source, not a split part", in.String())
					}
				}
			}
			// With -flto the part is inlined into each inlined copy too, at
			// the copy's entry: one copy there, not two.
			if variant == nginxtest.VariantO2 && split == 0 {
				t.Errorf("no split part among %d copies of ngx_connection_error", len(ins))
			}
			if variant == nginxtest.VariantLTO && recv == 0 {
				t.Errorf("no copy of ngx_connection_error inlined into ngx_unix_recv with -flto")
			}
			t.Logf("ngx_connection_error: %d copies, %d split parts, %d in ngx_unix_recv", len(ins), split, recv)
		})
	}
}

// TestInlinedScope: a path resolves against the copy's own parameters;
// one that cannot be located compiles to a plan that reads nothing and
// says why, while a misspelt member is still an error.
func TestInlinedScope(t *testing.T) {
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			ins, err := b.InlinedInstances("ngx_http_finalize_connection")
			if err != nil || len(ins) != 2 {
				t.Fatalf("InlinedInstances(ngx_http_finalize_connection) = %d, %v; want 2", len(ins), err)
			}
			sort.Slice(ins, func(i, j int) bool { return ins[i].Line > ins[j].Line })
			// The copy at the end of ngx_http_finalize_request has r in a
			// register; the one for rc == NGX_DONE has lost it.
			ok, gone := ins[0], ins[1]
			if ok.Caller != "ngx_http_finalize_request" || ok.Line != 2708 || gone.Line != 2539 {
				t.Fatalf("copies %s and %s; want them in ngx_http_finalize_request at lines 2708 and 2539", ok.String(), gone.String())
			}
			plan, err := b.CompileText("r->connection->number", b.NewInlinedScope(&ok))
			if err != nil {
				t.Fatal(err)
			}
			r := param(t, ok, "r")
			if plan.Root.Unavailable != "" || plan.Root.Reg != r.Location.Reg || len(plan.Loads) != 1 {
				t.Errorf("r->connection->number at %s: %+v, want a load from r in %v", ok.String(), plan, r.Location)
			}
			plan, err = b.CompileText("r->connection->number", b.NewInlinedScope(&gone))
			if err != nil {
				t.Fatalf("at %s: %v; want a plan reading nothing", gone.String(), err)
			}
			if !strings.Contains(plan.Root.Unavailable, "parameter r of ngx_http_finalize_connection inlined into ngx_http_finalize_request") || !strings.Contains(plan.Root.Unavailable, "optimized out") {
				t.Errorf("at %s: Root.Unavailable = %q", gone.String(), plan.Root.Unavailable)
			}
			if _, err := b.CompileText("r->connection->numbr", b.NewInlinedScope(&gone)); err == nil || !strings.Contains(err.Error(), "number") {
				t.Errorf("a misspelt member at an inlined copy: %v, want an error naming number", err)
			}
			if _, err := b.CompileText("c", b.NewInlinedScope(&ok)); !errors.Is(err, symbols.ErrNoParam) || !strings.Contains(err.Error(), `"c" in ngx_http_finalize_connection (its inlined copies)`) {
				t.Errorf("an unknown name at an inlined copy: %v, want ErrNoParam naming the copy", err)
			}
			// A clone's exact name names that instance only.
			fns, _ := b.Lookup("ngx_http_finalize_connection")
			for _, fn := range fns {
				if in, _ := b.InlinedInstances(fn.Symbol); fn.IsClone() && len(in) != 0 {
					t.Errorf("InlinedInstances(%s) = %d copies, want none for a clone's name", fn.Symbol, len(in))
				}
			}
		})
	}
}

func param(t *testing.T, in symbols.InlinedInstance, name string) symbols.Param {
	t.Helper()
	for _, p := range in.Params {
		if p.Name == name {
			if p.Err != nil {
				t.Fatalf("%s: %s: %v", in.String(), name, p.Err)
			}
			return p
		}
	}
	t.Fatalf("%s: no parameter %s in %+v", in.String(), name, in.Params)
	return symbols.Param{}
}
