package symbols_test

// Fuzzers of Open and of everything it answers, on files that other people
// control: a tenant's module, a debug file from a debuginfod server. Their
// seed corpora (testdata/fuzz/FuzzOpen, FuzzPlan) are small real files:
// testdata/fuzzseed built by gcc in every way nginx is built, written by
// TestGenerateFuzzSeeds. CI runs the seeds as ordinary tests;
// bench/fuzz.sh fuzzes.

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// fuzzLimits keeps each fuzz input cheap: far below the defaults, far
// above what the seeds need.
func fuzzOptions(dir string) *symbols.OpenOptions {
	return &symbols.OpenOptions{DebugRoot: filepath.Join(dir, "no-debug-root"), MaxDebugInfo: 8 << 20, MaxUnits: 4096, MaxLineRows: 1 << 16}
}

// fuzzSections are the sections FuzzOpen mutates on their own, in the
// order of its arguments after the file and the supplementary file. A
// name list is tried in order: DWARF 5 or 4.
var fuzzSections = [][]string{
	{".debug_info"}, {".debug_abbrev"}, {".debug_line"}, {".debug_loclists", ".debug_loc"}, {".debug_str_offsets"},
}

// inputTimeout bounds one input: a hang is a failure, not a stall.
const inputTimeout = 10 * time.Second

// within runs fn, failing the test when it takes longer than inputTimeout.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Sprintf("%v\n%s", p, debug.Stack())
			}
			close(done)
		}()
		fn()
	}()
	select {
	case p := <-done:
		if p != nil {
			t.Fatalf("%s: panic: %v", what, p)
		}
	case <-time.After(inputTimeout):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: still running after %v:\n%s", what, inputTimeout, buf)
	}
}

// checkErr fails on an error that does not say what went wrong.
func checkErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	switch msg := err.Error(); msg {
	case "", "EOF", "unexpected EOF":
		t.Fatalf("%s: bare error %q", what, msg)
	}
}

// writeFuzzFiles writes the main file, with its sections replaced by the
// non-empty ones given, and the supplementary file beside it under the
// name the dwz seeds link to.
func writeFuzzFiles(t *testing.T, file, sup []byte, sections ...[]byte) string {
	dir := t.TempDir()
	for i, data := range sections {
		if len(data) > 0 {
			file = replaceSection(file, fuzzSections[i], data)
		}
	}
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, file, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(sup) > 0 {
		if err := os.WriteFile(filepath.Join(dir, "sup.debug"), sup, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, file, sup, info, abbrev, line, loc, strOffsets []byte) {
		bin := writeFuzzFiles(t, file, sup, info, abbrev, line, loc, strOffsets)
		within(t, "Open", func() {
			b, err := symbols.Open(bin, fuzzOptions(filepath.Dir(bin)))
			if err != nil {
				checkErr(t, "Open", err)
				if !strings.Contains(err.Error(), bin) {
					t.Fatalf("Open: error %q does not name the file", err)
				}
				return
			}
			defer b.Close()
			exercise(t, b)
		})
	})
}

// exercise asks the binary every question the tracer asks.
func exercise(t *testing.T, b *symbols.Binary) {
	fs, err := b.Functions("")
	checkErr(t, "Functions", err)
	var pcs []uint64
	for i, fn := range fs {
		if i == 16 {
			break
		}
		pcs = append(pcs, fn.Address, fn.Address+5)
		_, err := b.Params(fn)
		checkErr(t, "Params "+fn.Symbol, err)
		_, err = b.ParamsAt(fn, fn.Address+4)
		checkErr(t, "ParamsAt "+fn.Symbol, err)
		_, err = b.ReturnType(fn)
		checkErr(t, "ReturnType "+fn.Symbol, err)
		_, err = b.Code(fn.Address, 16)
		checkErr(t, "Code "+fn.Symbol, err)
		b.Symbolize(fn.Address + 1)
	}
	for _, c := range b.InlineChains(pcs) {
		for _, v := range c.Vars {
			_, err := b.Location(c.Unit, v, pcs[0])
			checkErr(t, "Location", err)
		}
	}
	for _, name := range []string{"handle", "walk", "status_of", "many", "leaf_sum", "main", "nosuch"} {
		_, err := b.Lookup(name)
		checkErr(t, "Lookup "+name, err)
		b.InlineSites(name)
	}
	for _, name := range []string{"req_t", "struct mid_s", "leaf_s", "str_t", "int", "nosuch_t"} {
		typ, err := b.Type(name)
		checkErr(t, "Type "+name, err)
		if err != nil {
			continue
		}
		symbols.TypeName(typ)
		if _, err := symbols.Layout(typ); err == nil {
			b.GlobalsOfType(strings.TrimPrefix(name, "struct "), typ.Size())
			b.Embeddings(strings.TrimPrefix(name, "struct "), typ.Size(), 4)
		}
	}
	for _, line := range []int{1, 12, 14, 35} {
		_, err := b.LineSites("main.c", line)
		checkErr(t, "LineSites", err)
	}
	_, err = b.LineSites("types.h", 39)
	checkErr(t, "LineSites", err)
	b.CompDir()
}

// replaceSection returns the ELF file data with the first of the sections
// named that it has replaced by content: in place when it fits, else
// appended at the end of the file, the section header changed to match.
// Data that is not a 64-bit little-endian ELF file comes back as it is.
func replaceSection(data []byte, names []string, content []byte) []byte {
	f, err := elf.NewFile(bytesReaderAt(data))
	if err != nil || f.Class != elf.ELFCLASS64 || f.ByteOrder != binary.LittleEndian || len(data) < 64 {
		return data
	}
	shoff := binary.LittleEndian.Uint64(data[0x28:])
	shentsize := uint64(binary.LittleEndian.Uint16(data[0x3a:]))
	for _, name := range names {
		for i, s := range f.Sections {
			if s.Name != name || s.Type == elf.SHT_NOBITS {
				continue
			}
			hdr := shoff + uint64(i)*shentsize
			if shentsize < 64 || hdr+64 > uint64(len(data)) || hdr+64 < hdr {
				return data
			}
			out := append([]byte(nil), data...)
			off := s.Offset
			if uint64(len(content)) > s.Size || off > uint64(len(out)) || s.Size > uint64(len(out))-off {
				off = uint64(len(out))
				out = append(out, content...)
			} else {
				copy(out[off:], content)
			}
			binary.LittleEndian.PutUint64(out[hdr+0x18:], off)
			binary.LittleEndian.PutUint64(out[hdr+0x20:], uint64(len(content)))
			return out
		}
	}
	return data
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, errors.New("offset out of range")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

// FuzzPlan compiles member paths against the functions and types of a
// fuzzed binary (the seeds' handle(req_t *r, int rc) takes paths like
// r->a->b[1].c): a plan or a *PathError, never a panic or a hang.
func FuzzPlan(f *testing.F) {
	f.Fuzz(func(t *testing.T, file, info, abbrev []byte, path string) {
		bin := writeFuzzFiles(t, file, nil, info, abbrev)
		within(t, "Open and Compile", func() {
			b, err := symbols.Open(bin, fuzzOptions(filepath.Dir(bin)))
			if err != nil {
				checkErr(t, "Open", err)
				return
			}
			defer b.Close()
			compile := func(scope symbols.Scope, where string) {
				p, err := b.CompileText(path, scope)
				if err != nil {
					var pe *symbols.PathError
					if !errors.As(err, &pe) {
						t.Fatalf("%s: CompileText(%q): %T %v, want a *PathError", where, path, err, err)
					}
					if pe.At < 0 || pe.At > len(path) {
						t.Fatalf("%s: CompileText(%q): error at %d, outside the text", where, path, pe.At)
					}
					_ = err.Error()
					return
				}
				if len(p.Loads) > len(path) || p.Read.Size < 0 || p.Read.Size > 64 || p.Read.Cap > symbols.StringCap {
					t.Fatalf("%s: CompileText(%q) = %+v: more loads than the text has characters, or a read out of bounds", where, path, p)
				}
				_ = p.Format(make([]byte, max(p.Read.Size, 16)))
			}
			fs, _ := b.Functions("")
			for i, fn := range fs {
				if i == 8 {
					break
				}
				for _, atReturn := range []bool{false, true} {
					if scope, err := b.NewFunctionScope(fn, atReturn); err == nil {
						compile(scope, fn.Symbol)
					} else {
						checkErr(t, "NewFunctionScope", err)
					}
				}
			}
			for _, name := range []string{"req_t", "struct mid_s"} {
				if typ, err := b.Type(name); err == nil {
					compile(pointerScope{"r", typ, symbols.RegRDI}, name)
				}
			}
		})
	})
}

// The seed programs, built as nginx is built: gcc -O2 with DWARF 5 and 4,
// -flto, -O0, DWARF compressed both ways, split DWARF spliced back (the
// one way GCC writes .debug_str_offsets), and a dwz -m pair. Small: the
// segments are packed (-z noseparate-code).
var seedVariants = []struct {
	name  string
	flags []string
}{
	{"o2-dwarf5", []string{"-O2", "-g"}},
	{"o2-dwarf4", []string{"-O2", "-gdwarf-4"}},
	{"lto", []string{"-O2", "-g", "-flto"}},
	{"o0", []string{"-O0", "-g"}},
}

// TestGenerateFuzzSeeds writes the seed corpora of FuzzOpen and FuzzPlan.
// It runs only when asked:
//
//	NGXPROBE_FUZZ_SEEDS=1 go test ./symbols -run TestGenerateFuzzSeeds
func TestGenerateFuzzSeeds(t *testing.T) {
	if os.Getenv("NGXPROBE_FUZZ_SEEDS") == "" {
		t.Skip("writes testdata/fuzz; set NGXPROBE_FUZZ_SEEDS=1 to run it")
	}
	requireTools(t, "gcc", "dwz", "objcopy")
	src, err := filepath.Abs("testdata/fuzzseed")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cc := func(out, source string, flags ...string) []byte {
		args := append(append([]string{}, flags...), "-fdebug-prefix-map="+src+"=/src", "-fdebug-prefix-map="+dir+"=/build",
			"-Wl,-z,noseparate-code", "-o", filepath.Join(dir, out), filepath.Join(src, source))
		cmd := exec.Command("gcc", args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return readFile(t, filepath.Join(dir, out))
	}
	objcopy := func(args ...string) {
		if b, err := exec.Command("objcopy", args...).CombinedOutput(); err != nil {
			t.Fatalf("objcopy %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	type seed struct {
		name      string
		file, sup []byte
	}
	var seeds []seed
	for _, v := range seedVariants {
		seeds = append(seeds, seed{v.name, cc(v.name, "main.c", v.flags...), nil})
	}
	for _, how := range []string{"zlib", "zlib-gnu"} {
		bin := filepath.Join(dir, "compressed-"+how)
		cc("compressed-"+how, "main.c", "-O2", "-g")
		objcopy("--compress-debug-sections="+how, bin)
		seeds = append(seeds, seed{"compressed-" + how, readFile(t, bin), nil})
	}

	// dwz -m moves the types both programs share to sup.debug, which
	// .gnu_debugaltlink names relative to the debug file.
	cc("dwz-main", "main.c", "-O2", "-g")
	cc("dwz-other", "other.c", "-O2", "-g")
	cmd := exec.Command("dwz", "-m", "sup.debug", "-M", "sup.debug", "dwz-main", "dwz-other")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dwz: %v\n%s", err, b)
	}
	seeds = append(seeds, seed{"dwz", readFile(t, filepath.Join(dir, "dwz-main")), readFile(t, filepath.Join(dir, "sup.debug"))})

	// Split DWARF: the .dwo's sections replace the skeleton's, and its
	// string offsets and location lists are added. Their tables' headers
	// are dropped: a split unit has no DW_AT_*_base, so its indexes count
	// from the start of the section.
	cc("split", "main.c", "-O2", "-g", "-gsplit-dwarf")
	dwo, err := filepath.Glob(filepath.Join(dir, "*.dwo"))
	if err != nil || len(dwo) != 1 {
		t.Fatalf("split DWARF: .dwo files %v, %v", dwo, err)
	}
	dwoSection := func(name string, skip int) string {
		out := filepath.Join(dir, name)
		objcopy("--dump-section", ".debug_"+name+".dwo="+out, dwo[0], filepath.Join(dir, "scratch"))
		data := readFile(t, out)
		if len(data) < skip {
			t.Fatalf("%s.dwo: %d bytes", name, len(data))
		}
		if err := os.WriteFile(out, data[skip:], 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
	addr := filepath.Join(dir, "addr")
	split := filepath.Join(dir, "split")
	objcopy("--dump-section", ".debug_addr="+addr, split, filepath.Join(dir, "scratch"))
	if err := os.WriteFile(addr, readFile(t, addr)[8:], 0o644); err != nil {
		t.Fatal(err)
	}
	objcopy("--update-section", ".debug_info="+dwoSection("info", 0),
		"--update-section", ".debug_abbrev="+dwoSection("abbrev", 0),
		"--update-section", ".debug_str="+dwoSection("str", 0),
		"--update-section", ".debug_addr="+addr,
		"--add-section", ".debug_str_offsets="+dwoSection("str_offsets", 8),
		"--add-section", ".debug_loclists="+dwoSection("loclists", 12),
		split)
	seeds = append(seeds, seed{"split", readFile(t, split), nil})

	var openSeeds, planSeeds []corpusEntry
	for _, s := range seeds {
		args := []any{s.file, s.sup}
		sections := sectionsOf(t, s.file)
		for _, names := range fuzzSections {
			args = append(args, sections[names[0]]) // DWARF 5 ones; a DWARF 4 file keeps its own
		}
		openSeeds = append(openSeeds, corpusEntry{s.name, args})
		if s.sup == nil && !strings.HasPrefix(s.name, "compressed") {
			for i, path := range []string{"r->a->b[1].c", "r->a->next->b[3].eof", "r->host", "((struct mid_s *) r->a)->b[0].name"} {
				if i > 0 && s.name != "o2-dwarf5" {
					break
				}
				planSeeds = append(planSeeds, corpusEntry{fmt.Sprintf("%s-%d", s.name, i), []any{s.file, sections[".debug_info"], sections[".debug_abbrev"], path}})
			}
		}
	}
	// Some paths of FuzzParsePath, on the plain build.
	for i, path := range parsePathSeeds[:6] {
		if i == 2 || i == 3 {
			continue
		}
		planSeeds = append(planSeeds, corpusEntry{fmt.Sprintf("parse-%d", i), []any{seeds[0].file, []byte(nil), []byte(nil), path}})
	}
	writeCorpus(t, "FuzzOpen", openSeeds)
	writeCorpus(t, "FuzzPlan", planSeeds)
}

// sectionsOf reads the sections FuzzOpen mutates (plain ones only).
func sectionsOf(t *testing.T, file []byte) map[string][]byte {
	f, err := elf.NewFile(bytesReaderAt(file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, names := range fuzzSections {
		for _, name := range names {
			if s := f.Section(name); s != nil && s.Flags&elf.SHF_COMPRESSED == 0 {
				data, err := s.Data()
				if err != nil {
					t.Fatal(err)
				}
				out[names[0]] = data
				break
			}
		}
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corpusEntry is one seed file: its name and the fuzz arguments.
type corpusEntry struct {
	name string
	args []any
}

// writeCorpus replaces testdata/fuzz/NAME with the entries, in the
// format of go test's corpus files.
func writeCorpus(t *testing.T, fuzzer string, entries []corpusEntry) {
	dir := filepath.Join("testdata", "fuzz", fuzzer)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var total int
	for _, e := range entries {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range e.args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case string:
				fmt.Fprintf(&b, "string(%q)\n", v)
			default:
				t.Fatalf("corpus argument of type %T", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, e.name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		total += b.Len()
	}
	t.Logf("%s: %d seeds, %d KiB", fuzzer, len(entries), total>>10)
}
