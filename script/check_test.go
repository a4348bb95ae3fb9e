package script_test

import (
	"bufio"
	"debug/dwarf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// The tests here compile scripts against the two nginx test builds, as
// `ngxprobe check` does: no root, nothing attached. Ground truth for
// addresses comes from binutils (objdump), not from package symbols.

func compile(t *testing.T, bin *symbols.Binary, src string) (*script.Program, error) {
	t.Helper()
	s, err := script.ParseText("t.ngxp", src, noInclude)
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", src, err)
	}
	return script.Compile(symbols.NewImage(bin), s)
}

func mustCompile(t *testing.T, bin *symbols.Binary, src string) *script.Program {
	t.Helper()
	prog, err := compile(t, bin, src)
	if err != nil {
		t.Fatalf("compile:\n%s\n%v", src, err)
	}
	checkFormats(t, prog)
	return prog
}

// compileErrors compiles src, which must fail, and checks every error.
func compileErrors(t *testing.T, bin *symbols.Binary, src string) script.ErrorList {
	t.Helper()
	prog, err := compile(t, bin, src)
	if err == nil {
		t.Fatalf("compile of\n%s\nsucceeded: %d probes", src, len(prog.Probes))
	}
	if prog != nil {
		t.Errorf("Compile returned a program and an error")
	}
	checkErrorList(t, err, map[string]string{"t.ngxp": src})
	return err.(script.ErrorList)
}

// at returns "line:col" of the first occurrence of sub in src.
func at(t *testing.T, src, sub string) string {
	t.Helper()
	i := strings.Index(src, sub)
	if i < 0 {
		t.Fatalf("%q not in %q", sub, src)
	}
	line := strings.Count(src[:i], "\n") + 1
	col := i - strings.LastIndex(src[:i], "\n")
	return fmt.Sprintf("%d:%d", line, col)
}

func posOf(e *script.Error) string { return fmt.Sprintf("%d:%d", e.Pos.Line, e.Pos.Col) }

func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.SkipOrFail(t, "%s is not installed (%v)", name, err)
	}
	return p
}

// decodedLines is objdump's decoded line table of a binary: for each
// "file line", the addresses of its is_stmt rows.
type decodedLines map[string][]uint64

var (
	decodedMu    sync.Mutex
	decodedCache = map[string]decodedLines{}
)

func objdumpLines(t *testing.T, binary string) decodedLines {
	t.Helper()
	decodedMu.Lock()
	defer decodedMu.Unlock()
	if d, ok := decodedCache[binary]; ok {
		return d
	}
	objdump := requireTool(t, "objdump")
	out, err := exec.Command(objdump, "--dwarf=decodedline", binary).Output()
	if err != nil {
		t.Fatalf("objdump --dwarf=decodedline: %v", err)
	}
	d := decodedLines{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		// "ngx_recv.c   76   0x4a760   1   x": file, line, address,
		// an optional view, and x for is_stmt.
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[len(f)-1] != "x" || !strings.HasPrefix(f[2], "0x") {
			continue
		}
		addr, err := strconv.ParseUint(f[2][2:], 16, 64)
		if err != nil {
			continue
		}
		key := filepath.Base(f[0]) + " " + f[1]
		d[key] = append(d[key], addr)
	}
	decodedCache[binary] = d
	return d
}

// has reports whether objdump places a statement of file:line at addr.
func (d decodedLines) has(file string, line int, addr uint64) bool {
	for _, a := range d[fmt.Sprintf("%s %d", filepath.Base(file), line)] {
		if a == addr {
			return true
		}
	}
	return false
}

// instructionStarts disassembles [from, to) with objdump and returns the
// address of each instruction.
func instructionStarts(t *testing.T, binary string, from, to uint64) []uint64 {
	t.Helper()
	objdump := requireTool(t, "objdump")
	out, err := exec.Command(objdump, "-d", "--no-show-raw-insn", fmt.Sprintf("--start-address=%#x", from), fmt.Sprintf("--stop-address=%#x", to), binary).Output()
	if err != nil {
		t.Fatalf("objdump -d: %v", err)
	}
	re := regexp.MustCompile(`^\s*([0-9a-f]+):\s`)
	var starts []uint64
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			a, _ := strconv.ParseUint(m[1], 16, 64)
			starts = append(starts, a)
		}
	}
	if len(starts) < 3 {
		t.Fatalf("objdump -d found %d instructions in [%#x, %#x):\n%s", len(starts), from, to, out)
	}
	return starts
}

// sourceLines reads a source file of the build.
func sourceLines(t *testing.T, dir, rel string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// eofLine returns the line of "rev->eof = 1;" in ngx_unix_recv that has
// code (another one is inside #if (NGX_HAVE_KQUEUE)), and the lines with
// that text and no code. It reads the line numbers from the source.
func eofLine(t *testing.T, bin *symbols.Binary, srcDir string) (int, []int) {
	t.Helper()
	const file = "src/os/unix/ngx_recv.c"
	code, noCode := 0, []int(nil)
	for i, l := range sourceLines(t, srcDir, file) {
		if strings.TrimSpace(l) != "rev->eof = 1;" {
			continue
		}
		_, err := bin.LineSites(file, i+1)
		switch {
		case err == nil && code == 0:
			code = i + 1
		case errors.Is(err, symbols.ErrNoCode):
			noCode = append(noCode, i+1)
		case err != nil:
			t.Fatalf("%s:%d: %v", file, i+1, err)
		}
	}
	if code == 0 {
		t.Fatalf("no line of %s with \"rev->eof = 1;\" has code", file)
	}
	return code, noCode
}

func lookupOne(t *testing.T, bin *symbols.Binary, name string) *symbols.Function {
	t.Helper()
	fns, err := bin.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 {
		t.Fatalf("%s has %d instances", name, len(fns))
	}
	return fns[0]
}

// TestCheckPoints compiles the language's example script and checks
// where every point attaches.
func TestCheckPoints(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, inst := nginx(t, variant)
			line, _ := eofLine(t, bin, inst.SourceDir)
			recv := lookupOne(t, bin, "ngx_unix_recv")
			starts := instructionStarts(t, inst.Binary, recv.Address, recv.Address+32)
			off := starts[2] - recv.Address // the third instruction

			src := fmt.Sprintf(`define conn = r->connection
ngx_http_finalize_request, ngx_http_terminate_request / rc == 499 || conn->read->eof / {
    c = conn
    print(rc, status = r->headers_out.status, c->number, c->addr_text)
    printf("conn *%%d eof=%%d\n", c->number, c->read->eof)
    stack
    @fin[probe, r->headers_out.status] = count()
}
ngx_unix_recv%%return / c->addr_text == "127.0.0.1" / { @bytes[c->number] = sum($retval) }
src/os/unix/ngx_recv.c:%d { print(size) }
ngx_unix_recv+%#x { }
ngx_http_ssl_handshake { print(((ngx_connection_t *) rev->data)->number) }
`, line, off)
			prog := mustCompile(t, bin, src)

			type want struct {
				text, pos, kind, fn string
			}
			wants := []want{
				{"ngx_http_finalize_request", "2:1", "uprobe", "ngx_http_finalize_request"},
				{"ngx_http_terminate_request", "2:28", "uprobe", "ngx_http_terminate_request"},
				{"ngx_unix_recv%return", "9:1", "uretprobe", "ngx_unix_recv"},
				{fmt.Sprintf("src/os/unix/ngx_recv.c:%d", line), "10:1", "uprobe", "ngx_unix_recv"},
				{fmt.Sprintf("ngx_unix_recv+%#x", off), "11:1", "uprobe", "ngx_unix_recv"},
				{"ngx_http_ssl_handshake", "12:1", "uprobe", "ngx_http_ssl_handshake"},
			}
			if len(prog.Points) != len(wants) {
				t.Fatalf("%d points, want %d", len(prog.Points), len(wants))
			}
			instances := 0
			for i, w := range wants {
				p := prog.Points[i]
				if p.Text != w.text || fmt.Sprintf("%d:%d", p.Pos.Line, p.Pos.Col) != w.pos || p.Pos.File != "t.ngxp" {
					t.Errorf("point %d: %q at %v, want %q at t.ngxp:%s", i, p.Text, p.Pos, w.text, w.pos)
				}
				if len(p.Instances) == 0 {
					t.Errorf("%s: no instances", p.Text)
				}
				fns, err := bin.Lookup(w.fn)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range p.Instances {
					instances++
					if in.Kind != w.kind {
						t.Errorf("%s: kind %s, want %s", p.Text, in.Kind, w.kind)
					}
					if symbols.BaseName(in.Symbol) != w.fn {
						t.Errorf("%s: symbol %s", p.Text, in.Symbol)
					}
					var fn *symbols.Function
					for _, f := range fns {
						if f.Symbol == in.Symbol {
							fn = f
						}
					}
					if fn == nil {
						t.Errorf("%s: instance %s is not one of %s's", p.Text, in.Symbol, w.fn)
						continue
					}
					if in.Address != fn.Address+in.Offset || in.FileOffset != fn.Offset+in.Offset {
						t.Errorf("%s: address %#x, file offset %#x, offset %#x; function at %#x (file %#x)", p.Text, in.Address, in.FileOffset, in.Offset, fn.Address, fn.Offset)
					}
					if in.Offset >= fn.Size {
						t.Errorf("%s: offset %#x past the end of %s (%d bytes)", p.Text, in.Offset, fn.Symbol, fn.Size)
					}
				}
			}
			if instances != len(prog.Probes) {
				t.Errorf("%d instances but %d probes", instances, len(prog.Probes))
			}

			// ngx_http_ssl_handshake is static: the LTO build may rename it.
			ssl := prog.Points[5].Instances
			t.Logf("ngx_http_ssl_handshake attaches at %s", ssl[0].Symbol)
			if ssl[0].Offset != 0 {
				t.Errorf("ngx_http_ssl_handshake: offset %#x", ssl[0].Offset)
			}

			// The line probe: inside ngx_unix_recv, and objdump agrees
			// that the address starts a statement of that line.
			lp := prog.Points[3].Instances
			if len(lp) != 1 {
				t.Errorf("line probe has %d instances, want 1", len(lp))
			}
			if lp[0].Address < recv.Address || lp[0].Address >= recv.Address+recv.Size || lp[0].Inlined != "" {
				t.Errorf("line probe at %#x (inlined %q), ngx_unix_recv is [%#x, %#x)", lp[0].Address, lp[0].Inlined, recv.Address, recv.Address+recv.Size)
			}
			if !objdumpLines(t, inst.Binary).has("ngx_recv.c", line, lp[0].Address) {
				t.Errorf("objdump has no statement of ngx_recv.c:%d at %#x", line, lp[0].Address)
			}
			if got := prog.Points[4].Instances[0].Offset; got != off {
				t.Errorf("offset probe at +%#x, want +%#x", got, off)
			}

			// Probes and specs.
			finalize, terminate := prog.Probes[0], prog.Probes[1]
			if finalize.Name != "ngx_http_finalize_request" || terminate.Name != "ngx_http_terminate_request" {
				t.Errorf("probe names %q, %q", finalize.Name, terminate.Name)
			}
			if finalize.Filter == nil || !finalize.Stack || finalize.NoEvent || finalize.Return {
				t.Errorf("finalize: filter %v, stack %v, no event %v, return %v", finalize.Filter, finalize.Stack, finalize.NoEvent, finalize.Return)
			}
			spec := prog.Format(finalize)
			var names []string
			for i, v := range spec.Values {
				if !v.Hidden {
					names = append(names, v.Name+"="+finalize.Values[i].Expr)
				}
			}
			if got := strings.Join(names, " "); got != "rc=rc status=r->headers_out.status c->number=c->number c->addr_text=c->addr_text" {
				t.Errorf("printed values: %s", got)
			}
			if len(spec.Messages) != 1 || spec.Messages[0].Format != "conn *%d eof=%d\n" || fmt.Sprint(spec.Messages[0].Args) != "[4 5]" {
				t.Errorf("messages: %+v", spec.Messages)
			}
			if spec.Values[2].Display != script.Connection {
				t.Errorf("c->number is not shown as a connection")
			}
			ret := prog.Probes[2]
			if !ret.Return || ret.Filter == nil || !ret.NoEvent || len(ret.Aggregates) != 1 || ret.Aggregates[0].Value == nil {
				t.Errorf("ngx_unix_recv%%return: return %v, filter %v, no event %v, aggregates %+v", ret.Return, ret.Filter, ret.NoEvent, ret.Aggregates)
			}
			if p := prog.Probes[4]; p.At != off || p.NoEvent != false {
				t.Errorf("an empty body prints the hit: at %#x, no event %v", p.At, p.NoEvent)
			}

			// Aggregations, with the probe builtin as a key.
			if len(prog.Aggregations) != 2 {
				t.Fatalf("%d aggregations", len(prog.Aggregations))
			}
			fin, bytes := prog.Aggregations[0], prog.Aggregations[1]
			if fin.Name != "fin" || fin.Func != "count" || fmt.Sprint(fin.KeyNames) != "[probe r->headers_out.status]" || fmt.Sprint(fin.ProbeKey) != "[true false]" {
				t.Errorf("@fin: %s %s keys %v probe key %v", fin.Name, fin.Func, fin.KeyNames, fin.ProbeKey)
			}
			if fin.ProbeName(0) != "ngx_http_finalize_request" || fin.ProbeName(1) != "ngx_http_terminate_request" || fin.ProbeName(7) != "7" {
				t.Errorf("@fin probe names: %q %q %q", fin.ProbeName(0), fin.ProbeName(1), fin.ProbeName(7))
			}
			if bytes.Name != "bytes" || bytes.Func != "sum" || fmt.Sprint(bytes.KeyNames) != "[c->number]" {
				t.Errorf("@bytes: %s %s keys %v", bytes.Name, bytes.Func, bytes.KeyNames)
			}
		})
	}
}

// TestCheckReturnSeesArguments: a return probe reads the entry's
// arguments (the tool saves them) and $retval.
func TestCheckReturnSeesArguments(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, _ := nginx(t, variant)
			prog := mustCompile(t, bin, `ngx_unix_recv%return / $retval > 0 && c->fd != -1 / { print(c->fd, size, n = $retval) }`)
			p := prog.Probes[0]
			if !p.Return || len(p.Values) != 3 || p.Filter == nil {
				t.Errorf("return %v, %d values, filter %v", p.Return, len(p.Values), p.Filter)
			}
			if prog.Points[0].Instances[0].Kind != "uretprobe" {
				t.Errorf("kind %s", prog.Points[0].Instances[0].Kind)
			}
		})
	}
}

// fullyInlined finds, in the DWARF, the ngx_ function inlined at the
// most call sites that has no instance of its own (and no ELF symbol).
func fullyInlined(t *testing.T, bin *symbols.Binary) (string, int) {
	t.Helper()
	count := map[string]int{}
	r := bin.DWARF().Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if e.Tag == dwarf.TagInlinedSubroutine {
			if name, _ := bin.Attr(e, dwarf.AttrName).(string); strings.HasPrefix(name, "ngx_") {
				count[name]++
			}
		}
	}
	symbolNames := map[string]bool{}
	for _, s := range bin.FunctionSymbols() {
		symbolNames[symbols.BaseName(s.Name)] = true
	}
	best := ""
	for name, n := range count {
		if bin.HasFunction(name) || symbolNames[name] {
			continue
		}
		if best == "" || n > count[best] || n == count[best] && name < best {
			best = name
		}
	}
	if best == "" {
		t.Fatal("no fully inlined ngx_ function in the DWARF")
	}
	return best, count[best]
}

// definitionLine finds "NAME(" at the start of a line, nginx's style for
// function definitions, in the build's src/.
func definitionLine(t *testing.T, srcDir, name string) (string, int) {
	t.Helper()
	var file string
	var line int
	filepath.WalkDir(filepath.Join(srcDir, "src"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || file != "" || !(strings.HasSuffix(path, ".c") || strings.HasSuffix(path, ".h")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for i, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, name+"(") {
				file, _ = filepath.Rel(srcDir, path)
				line = i + 1
				return filepath.SkipAll
			}
		}
		return nil
	})
	if file == "" {
		t.Fatalf("no definition of %s in %s/src", name, srcDir)
	}
	return file, line
}

// TestCheckInlined: a function GCC inlined everywhere is probed by name
// at the entry of every inlined copy; its return and an offset into it
// cannot be probed, and the error says so and lists call sites; a line
// inside it reaches every inlined copy.
func TestCheckInlined(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, inst := nginx(t, variant)
			name, n := fullyInlined(t, bin)
			sites := bin.InlineSites(name)
			t.Logf("%s is inlined at %d call sites, e.g. in %s at %s:%d", name, len(sites), sites[0].Caller, sites[0].File, sites[0].Line)
			if len(sites) != n {
				t.Errorf("InlineSites(%s) has %d sites, the DWARF %d", name, len(sites), n)
			}
			inlined, err := bin.InlinedInstances(name)
			if err != nil || len(inlined) < 2 || len(inlined) > n {
				t.Fatalf("InlinedInstances(%s) = %d copies, %v; the DWARF has %d inlined subroutines", name, len(inlined), err, n)
			}
			// Parts GCC split off and inlined back into a copy run after
			// that copy's entry: they are not probed again.
			calls := inlined[:0:0]
			for _, in := range inlined {
				if !in.IsSplitPart() {
					calls = append(calls, in)
				}
			}
			inlined = calls
			byName := mustCompile(t, bin, name+" { }")
			if got := byName.Points[0].Instances; len(got) != len(inlined) || len(byName.Probes) != len(inlined) {
				t.Errorf("%s { } attaches at %d places with %d probes, want one per inlined copy (%d)", name, len(got), len(byName.Probes), len(inlined))
			} else {
				for i, in := range got {
					c := inlined[i]
					if !in.InlinedCopy || in.Inlined != c.String() || in.Address != c.Address || in.Symbol != c.Function.Symbol || in.Offset != c.Offset || in.FileOffset != c.FileOffset {
						t.Errorf("%s { }: instance %+v, want the copy %s at %#x", name, in, c.String(), c.Address)
					}
				}
			}
			for _, form := range []string{name + "%return", name + "+0x4"} {
				src := "\n  " + form + " { }"
				errs := compileErrors(t, bin, src)
				if len(errs) != 1 {
					t.Fatalf("%d errors: %v", len(errs), errs)
				}
				e := errs[0]
				if !errors.Is(e, symbols.ErrInlined) || !errors.Is(e, script.ErrResolve) {
					t.Errorf("%s: not ErrInlined and ErrResolve: %v", form, e)
				}
				if posOf(e) != "2:3" {
					t.Errorf("%s: error at %s", form, posOf(e))
				}
				for _, want := range []string{"function is inlined everywhere", name + " has no out-of-line copy", fmt.Sprintf("GCC inlined it at %d call sites", len(sites))} {
					if !strings.Contains(e.Msg, want) {
						t.Errorf("message %q lacks %q", e.Msg, want)
					}
				}
				first := fmt.Sprintf("in %s at %s:%d (%#x)", sites[0].Caller, sites[0].File, sites[0].Line, sites[0].Low)
				if !strings.Contains(e.Hint, first) || !strings.Contains(e.Hint, "FILE:LINE reaches every inlined copy") {
					t.Errorf("hint %q lacks %q", e.Hint, first)
				}
				if len(sites) > 8 && !strings.Contains(e.Hint, fmt.Sprintf("... and %d more", len(sites)-8)) {
					t.Errorf("hint does not count the other sites: %q", e.Hint)
				}
			}

			// A line of its body: one probe per inlined copy.
			file, def := definitionLine(t, inst.SourceDir, name)
			body := 0
			for l := def + 1; l < def+40 && body == 0; l++ {
				ls, err := bin.LineSites(file, l)
				if err != nil {
					continue
				}
				for _, s := range ls {
					if s.Inlined == name {
						body = l
					}
				}
			}
			if body == 0 {
				t.Fatalf("no line after %s:%d has code inlined from %s", file, def, name)
			}
			point := fmt.Sprintf("%s:%d", file, body)
			prog := mustCompile(t, bin, point+" { }")
			copies := 0
			dl := objdumpLines(t, inst.Binary)
			for _, in := range prog.Points[0].Instances {
				if in.Inlined == name {
					copies++
				}
				if symbols.BaseName(in.Symbol) == name {
					t.Errorf("%s attaches to %s, an instance of the inlined function", point, in.Symbol)
				}
				if !dl.has(file, body, in.Address) {
					t.Errorf("objdump has no statement of %s at %#x (in %s)", point, in.Address, in.Symbol)
				}
			}
			t.Logf("%s attaches at %d places, %d of them inlined copies of %s", point, len(prog.Points[0].Instances), copies, name)
			if copies < 2 {
				t.Errorf("%s reaches %d inlined copies of %s, want several", point, copies, name)
			}
		})
	}
}

// TestCheckLines: lines without code, files that are not in the build.
func TestCheckLines(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, inst := nginx(t, variant)
			const file = "src/os/unix/ngx_recv.c"
			code, noCode := eofLine(t, bin, inst.SourceDir)
			// A comment line: the first after the eof line.
			lines := sourceLines(t, inst.SourceDir, file)
			comment := 0
			for i := code; i < len(lines) && comment == 0; i++ {
				if s := strings.TrimSpace(lines[i]); strings.HasPrefix(s, "/*") || strings.HasPrefix(s, "* ") {
					comment = i + 1
				}
			}
			if comment == 0 {
				t.Fatalf("no comment line after %s:%d", file, code)
			}
			t.Logf("%s: eof line %d has code, %v do not; comment line %d", file, code, noCode, comment)
			for _, line := range append([]int{comment}, noCode...) {
				src := fmt.Sprintf("ngx_unix_recv {}\n%s:%d { print(c) }", file, line)
				errs := compileErrors(t, bin, src)
				if len(errs) != 1 {
					t.Fatalf("%d errors: %v", len(errs), errs)
				}
				e := errs[0]
				if !errors.Is(e, symbols.ErrNoCode) || !errors.Is(e, script.ErrResolve) {
					t.Errorf("line %d: not ErrNoCode: %v", line, e)
				}
				if posOf(e) != "2:1" {
					t.Errorf("error at %s", posOf(e))
				}
				m := regexp.MustCompile(`lines nearby with code: ([0-9, ]+)$`).FindStringSubmatch(e.Msg)
				if m == nil {
					t.Fatalf("line %d: no nearby lines in %q", line, e.Msg)
				}
				nearest := 0
				for _, f := range strings.Split(m[1], ", ") {
					n, _ := strconv.Atoi(f)
					if _, err := bin.LineSites(file, n); err != nil || n == line {
						t.Errorf("nearby line %d: %v", n, err)
					}
					if nearest == 0 || abs(n-line) < abs(nearest-line) {
						nearest = n
					}
				}
				if want := fmt.Sprintf("probe a line with code, e.g. %s:%d", file, nearest); e.Hint != want {
					t.Errorf("hint %q, want %q", e.Hint, want)
				}
			}

			errs := compileErrors(t, bin, "ngx_nosuch.c:10 {}")
			if !errors.Is(errs[0], symbols.ErrFileNotFound) || !strings.Contains(errs[0].Hint, "src/os/unix/ngx_recv.c") {
				t.Errorf("unknown file: %v", errs[0])
			}
			// A base name is enough.
			prog := mustCompile(t, bin, fmt.Sprintf("ngx_recv.c:%d {}", code))
			if len(prog.Points[0].Instances) != 1 || symbols.BaseName(prog.Points[0].Instances[0].Symbol) != "ngx_unix_recv" {
				t.Errorf("ngx_recv.c:%d: %+v", code, prog.Points[0].Instances)
			}
		})
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// TestCheckOffsets: FUNCTION+OFFSET must start an instruction.
func TestCheckOffsets(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, inst := nginx(t, variant)
			recv := lookupOne(t, bin, "ngx_unix_recv")
			starts := instructionStarts(t, inst.Binary, recv.Address, recv.Address+64)
			for i := 0; i+1 < len(starts); i++ {
				off := starts[i] - recv.Address
				mustCompile(t, bin, fmt.Sprintf("ngx_unix_recv+%#x { }", off))
				for inside := starts[i] + 1; inside < starts[i+1]; inside++ {
					src := fmt.Sprintf("ngx_unix_recv+%d { }", inside-recv.Address)
					errs := compileErrors(t, bin, src)
					want := fmt.Sprintf("ngx_unix_recv+%#x is inside an instruction (the nearest start before it is +%#x, after it +%#x)", inside-recv.Address, off, starts[i+1]-recv.Address)
					if errs[0].Msg != want || !strings.Contains(errs[0].Hint, "objdump -d") {
						t.Errorf("%s:\n got %q\nwant %q", src, errs[0].Msg, want)
					}
				}
			}
			errs := compileErrors(t, bin, fmt.Sprintf("ngx_unix_recv+%d { }", recv.Size))
			if !strings.Contains(errs[0].Msg, "past the end of ngx_unix_recv") {
				t.Errorf("past the end: %v", errs[0])
			}

			fns, err := bin.Functions("")
			if err != nil {
				t.Fatal(err)
			}
			// A symbol without a size (frame_dummy) gives no bound: an
			// offset that wraps the address space around to .text must
			// be refused, not allocated (it once panicked).
			text := bin.ELF().Section(".text")
			sizeless := 0
			for _, f := range fns {
				if f.Size != 0 || f.Address < text.Addr || f.Address >= text.Addr+text.Size {
					continue
				}
				sizeless++
				for _, off := range []uint64{-f.Address + text.Addr + 0x10, ^uint64(0), text.Addr + text.Size - f.Address} {
					errs := compileErrors(t, bin, fmt.Sprintf("%s+%#x {}", f.Symbol, off))
					if !strings.Contains(errs[0].Msg, "is outside .text") {
						t.Errorf("%s+%#x: %v", f.Symbol, off, errs[0])
					}
				}
			}
			t.Logf("%d functions in .text without a size", sizeless)

			// A function with several instances: an offset is ambiguous.
			byName := map[string][]*symbols.Function{}
			for _, f := range fns {
				byName[f.Name] = append(byName[f.Name], f)
			}
			// Clones (x and x.part.0) have their own symbols; static
			// functions of different files may share one.
			var clones, shared []string
			for n, fs := range byName {
				syms := map[string]bool{}
				for _, f := range fs {
					syms[f.Symbol] = true
				}
				switch {
				case len(fs) > 1 && len(syms) == len(fs):
					clones = append(clones, n)
				case len(fs) > 1:
					shared = append(shared, n)
				}
			}
			sort.Strings(clones)
			sort.Strings(shared)
			t.Logf("%d functions with clones, %d sharing a symbol: %q, %q", len(clones), len(shared), clones, shared)
			if len(clones) == 0 {
				t.Errorf("no function with clones in %s", variant)
			}
			for _, name := range clones {
				plain := false
				for _, f := range byName[name] {
					// Each symbol names its instance.
					prog := mustCompile(t, bin, f.Symbol+"+0 {}")
					if in := prog.Points[0].Instances; len(in) != 1 || in[0].Symbol != f.Symbol || in[0].Address != f.Address {
						t.Errorf("%s+0: %+v", f.Symbol, in)
					}
					plain = plain || f.Symbol == name
				}
				if plain {
					continue
				}
				// Only clones: the C name is ambiguous.
				errs = compileErrors(t, bin, name+"+0 {}")
				if !strings.Contains(errs[0].Msg, "so an offset is ambiguous") || !strings.HasPrefix(errs[0].Hint, "name one instance: ") {
					t.Errorf("%s+0: %v", name, errs[0])
				}
				for _, f := range byName[name] {
					if !strings.Contains(errs[0].Hint, f.Symbol+"+0x0") {
						t.Errorf("hint %q does not name %s", errs[0].Hint, f.Symbol)
					}
				}
			}
			for _, name := range shared {
				errs = compileErrors(t, bin, name+"+0 {}")
				if !strings.Contains(errs[0].Msg, "so an offset is ambiguous") || !strings.Contains(errs[0].Hint, "probe a FILE:LINE") {
					t.Errorf("%s+0: %v", name, errs[0])
				}
				break
			}
		})
	}
}

// TestCheckErrors checks messages, sentinels and positions of errors
// found against the binary.
func TestCheckErrors(t *testing.T) {
	cases := []struct {
		name     string
		src      string
		at       string // the error's position is this text's first occurrence
		msg      string // a substring of the message
		hint     string // a substring of the hint
		sentinel error
	}{
		{"misspelt function", "ngx_unix_recvv { }", "ngx_unix_recvv", `function not found: "ngx_unix_recvv"`, "", symbols.ErrFunctionNotFound},
		{"misspelt function, closest", "ngx_http_finalise_request { }", "ngx_http", "did you mean ngx_http_finalize_request", "", symbols.ErrFunctionNotFound},
		{"misspelt field", "ngx_unix_recv { print(c->fdd) }", "fdd", `field not found: "fdd" in ngx_connection_t; did you mean fd`, "", symbols.ErrFieldNotFound},
		{"misspelt parameter", "ngx_unix_recv { print(sise) }", "sise", `no such parameter: "sise" in ngx_unix_recv; did you mean size`, "", symbols.ErrNoParam},
		{"misspelt parameter in a filter", "ngx_unix_recv / cc->fd == 3 / {}", "cc", "did you mean c", "", symbols.ErrNoParam},
		{"misspelt type", "ngx_unix_recv { print(((ngx_conection_t *) c)->fd) }", "(ngx_conection_t", `type not found: "ngx_conection_t"`, "", symbols.ErrTypeNotFound},
		{"misspelt field in a define", "define conn = r->conection\n\nngx_http_finalize_request { print(conn->number) }", "conection", `"conection" in ngx_http_request_t; did you mean connection`, "", symbols.ErrFieldNotFound},
		{"misspelt field in a local", "ngx_unix_recv {\n  e = c->read->eoff\n  print(e)\n}", "eoff", `"eoff"`, "", symbols.ErrFieldNotFound},
		{"unknown name lists locals", "ngx_unix_recv {\n  conn = c\n  print(con->fd)\n}", "con->", "did you mean c, conn", "", symbols.ErrNoParam},
		{"retval at entry", "ngx_unix_recv { print($retval) }", "$retval", "$retval is only known in a return probe", "", symbols.ErrBadExpression},
		{"retval of a void function", "ngx_http_finalize_request%return / $retval == 0 / {}", "$retval", "ngx_http_finalize_request returns void, so there is no $retval", "", symbols.ErrBadExpression},
		{"number == string", `ngx_unix_recv / c->fd == "3" / {}`, "==", `type mismatch: c->fd is ngx_socket_t, a number, but "3" is a string`, "compare it with a number, e.g. c->fd == 1", nil},
		{"string == number", `ngx_unix_recv / c->addr_text == 3 / {}`, "==", "type mismatch: c->addr_text is a string (ngx_str_t), 3 is a number", `compare it with a string literal, e.g. c->addr_text == "..."`, nil},
		{"string literal on the left", `ngx_unix_recv / 3 != c->addr_text / {}`, "!=", "type mismatch: c->addr_text is a string (ngx_str_t), 3 is a number", "", nil},
		{"string == number value", `ngx_http_finalize_request / r->uri == rc / {}`, "==", "type mismatch: r->uri is a string (ngx_str_t) and rc is a number", "", nil},
		{"char * == number", `ngx_http_finalize_request / r->connection->log->action == 3 / {}`, "==", "is a string (char *), 3 is a number", "", nil},
		{"string == string", `ngx_http_finalize_request / r->method_name == r->uri / {}`, "==", "comparing two strings (r->method_name == r->uri) needs a read loop, which ngxprobe does not generate", "compare one of them with a string literal instead", nil},
		{"literal == literal", `ngx_unix_recv / 1 == 2 / {}`, "==", "== compares two literals", "compare a value read from nginx", nil},
		{"string literal == string literal", `ngx_unix_recv / "a" != "b" / {}`, "!=", "!= compares two literals", "", nil},
		{"string ordering", `ngx_http_finalize_request / r->uri < "/x" / {}`, "<", "strings compare with == and != only", "", nil},
		{"long string literal", `ngx_http_finalize_request / r->uri == "` + strings.Repeat("x", 64) + `" / {}`, `"xx`, "a string literal in a filter is at most 63 bytes", "", nil},
		{"string as a condition", `ngx_unix_recv / c->addr_text && c->fd / {}`, "->addr_text", "c->addr_text is a string (ngx_str_t), not a condition", "compare it with a literal", nil},
		{"literal as a condition", `ngx_unix_recv / !1 / {}`, "1", "a literal alone is not a condition", "", nil},
		{"print a literal", `ngx_unix_recv { print(c->fd, "x") }`, `"x"`, `"x" is a literal; print reads values from nginx`, "put fixed text in printf's format", nil},
		{"print a condition", `ngx_unix_recv { print(c->fd == 3) }`, "==", "c->fd == 3 is a condition, not a value to print", "use it as a filter", nil},
		{"printf with too few arguments", `ngx_unix_recv { printf("%d %s\n", c->fd) }`, "printf", "printf format has 2 verbs but 1 arguments", "", script.ErrSyntax},
		{"printf with too many arguments", `ngx_unix_recv { printf("fd %d%%\n", c->fd, size) }`, "printf", "printf format has 1 verbs but 2 arguments", "", script.ErrSyntax},
		{"printf with an unknown verb", `ngx_unix_recv { printf("%f\n", size) }`, "printf", "printf verb %f is not supported", "use %d, %u, %x, %s, %c or %p", script.ErrSyntax},
		{"printf ending in a verb", `ngx_unix_recv { printf("%-08l", size) }`, "printf", "printf format ends inside a verb", "", script.ErrSyntax},
		{"sum of a string", `ngx_unix_recv { @s = sum(c->addr_text) }`, "->addr_text", "sum(c->addr_text): c->addr_text is a string (ngx_str_t), and sum needs a number", "@s[c->addr_text] = count()", nil},
		{"sum of a constant", `ngx_unix_recv { @s = sum(5) }`, "5", "sum(5) of a constant", "count() counts hits", nil},
		{"aggregations of different shapes", "ngx_unix_recv { @a[c->fd] = count() }\nngx_unix_send { @a = sum(size) }", "@a =", "@a is count with 1 keys elsewhere, sum with 0 here", "give each aggregation its own @name", nil},
		{"defined twice", "define x = c\ndefine x = c->fd\nngx_unix_recv {}", "x = c->", "x is defined twice", "", nil},
		{"a struct is no value", "ngx_unix_recv { print(c->read->timer) }", "->timer", "name one of its members", "", symbols.ErrBadExpression},
		{"dot on a pointer", "ngx_unix_recv { print(c.fd) }", ".fd", "'.' on ngx_connection_t *, which is a pointer: use '->'", "", symbols.ErrBadExpression},
	}
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, _ := nginx(t, variant)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					errs := compileErrors(t, bin, c.src)
					e := errs[0]
					if len(errs) != 1 {
						t.Errorf("%d errors:\n%v", len(errs), errs)
					}
					if got, want := posOf(e), at(t, c.src, c.at); got != want {
						t.Errorf("error at %s, want %s (%q):\n%v", got, want, c.at, e)
					}
					if !strings.Contains(e.Msg, c.msg) {
						t.Errorf("message:\n%s\nwant it to contain:\n%s", e.Msg, c.msg)
					}
					if !strings.Contains(e.Hint, c.hint) {
						t.Errorf("hint %q, want it to contain %q", e.Hint, c.hint)
					}
					if c.sentinel != nil && !errors.Is(e, c.sentinel) {
						t.Errorf("errors.Is(%v) is false: %v", c.sentinel, e)
					}
					// The rendering: file:line:col, the line, a caret under the column.
					lines := strings.Split(e.Error(), "\n")
					if len(lines) < 3 || lines[1] != "    "+e.Pos.LineText || len(lines[2]) != 4+e.Pos.Col || !strings.HasSuffix(lines[2], "^") {
						t.Errorf("rendering:\n%s", e.Error())
					}
				})
			}
		})
	}
}

// TestCheckAllErrors: every error of a script is reported, in order.
func TestCheckAllErrors(t *testing.T) {
	bin, _ := nginx(t, variants[0])
	src := `ngx_unix_recvv { }
ngx_unix_recv / c->fd == "x" / { print(c->fdd) }
ngx_unix_recv { print(size) }
src/os/unix/ngx_recv.c:1 { }`
	errs := compileErrors(t, bin, src)
	var got []string
	for _, e := range errs {
		got = append(got, posOf(e))
	}
	// A misspelt field is shown under its name, not under the -> (#14).
	if want := []string{"1:1", at(t, src, "=="), at(t, src, "fdd"), "4:1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors at %v, want %v:\n%v", got, want, errs)
	}
	if !strings.HasSuffix(errs.Error(), "\n4 errors") {
		t.Errorf("the list does not count its errors:\n%v", errs)
	}
}

// TestCheckNoProbes: a script with nothing to attach is an error.
func TestCheckNoProbes(t *testing.T) {
	bin, _ := nginx(t, variants[0])
	_, err := compile(t, bin, "define conn = r->connection\n# nothing else\n")
	if !errors.Is(err, script.ErrResolve) || !strings.Contains(err.Error(), "the script has no probes") {
		t.Errorf("%v", err)
	}
}

// TestCheckSubstitutionSize: names built from names double with each
// one; compiling them must stop with an error, not run for ever.
func TestCheckSubstitutionSize(t *testing.T) {
	bin, _ := nginx(t, variants[0])
	var b strings.Builder
	b.WriteString("define a0 = c->fd == 1\n")
	for i := 1; i <= 64; i++ {
		fmt.Fprintf(&b, "define a%d = a%d && a%d\n", i, i-1, i-1)
	}
	b.WriteString("ngx_unix_recv / a64 / {}\n")
	errs := compileErrors(t, bin, b.String())
	// a0 has 4 nodes, a8 1279.
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "a8 expands to more than 1000 nodes") || posOf(errs[0]) != "9:8" {
		t.Errorf("%v", errs)
	}

	b.Reset()
	b.WriteString("ngx_unix_recv / l64 / {\n  l0 = c->fd\n")
	for i := 1; i <= 64; i++ {
		fmt.Fprintf(&b, "  l%d = l%d == l%d\n", i, i-1, i-1)
	}
	b.WriteString("}\n")
	errs = compileErrors(t, bin, b.String())
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "l9 expands to more than 1000 nodes") || posOf(errs[0]) != "11:3" {
		t.Errorf("%v", errs)
	}

	// Large but bounded: fine.
	b.Reset()
	b.WriteString("define a0 = c->fd == 1\n")
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&b, "define a%d = a%d || a%d\n", i, i-1, i-1)
	}
	b.WriteString("ngx_unix_recv / a6 / {}\n")
	mustCompile(t, bin, b.String())
}
