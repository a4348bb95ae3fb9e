package symbols_test

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// dwzPair copies the o2 and LTO test nginx into dir as a and b and runs
// `dwz -m` on them, as Debian's dh_dwz does on a package's ELF files: the
// DWARF they share moves to dir/sup.debug, which their .gnu_debugaltlink
// (or, with -5, .debug_sup) names as link.
func dwzPair(t *testing.T, dir, link string, dwzFlags ...string) (a, b, sup string) {
	t.Helper()
	requireTools(t, "dwz")
	a, b, sup = filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "sup.debug")
	copyFile(t, nginxtest.Build(t, nginxtest.VariantO2).Binary, a)
	copyFile(t, nginxtest.Build(t, nginxtest.VariantLTO).Binary, b)
	run(t, "dwz", append(dwzFlags, "-m", sup, "-M", link, a, b)...)
	return a, b, sup
}

func openOpts(t *testing.T, path string, opts symbols.OpenOptions) *symbols.Binary {
	t.Helper()
	if opts.DebugRoot == "" {
		opts.DebugRoot = emptyDebugRoot()
	}
	b, err := symbols.Open(path, &opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestDWZSupplementary checks that binaries whose DWARF dwz split with a
// supplementary file read as the original binaries do.
func TestDWZSupplementary(t *testing.T) {
	o2 := openBinary(t, nginxtest.Build(t, nginxtest.VariantO2).Binary)
	lto := openBinary(t, nginxtest.Build(t, nginxtest.VariantLTO).Binary)
	for _, c := range []struct {
		name string
		// link is the name the links give, relative to the binaries'
		// directory or absolute; "" for the file's absolute path.
		link  string
		flags []string
	}{
		{"gnu_debugaltlink", "sup.debug", nil},
		{"debug_sup", "", []string{"-5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			link := c.link
			if link == "" {
				link = filepath.Join(dir, "sup.debug")
			}
			a, b, sup := dwzPair(t, dir, link, c.flags...)
			for _, p := range []struct {
				path string
				want *symbols.Binary
			}{{a, o2}, {b, lto}} {
				got := openOpts(t, p.path, symbols.OpenOptions{})
				if want := "embedded + dwz " + sup; got.DebugSource != want {
					t.Fatalf("DebugSource = %q, want %q", got.DebugSource, want)
				}
				compareDWARF(t, got, p.want)
			}
		})
	}
}

// compareDWARF asserts that got, a dwz'd copy of want, reads the same.
func compareDWARF(t *testing.T, got, want *symbols.Binary) {
	t.Helper()
	for _, name := range []string{"ngx_event_t", "ngx_connection_t", "ngx_http_request_t"} {
		if g, w := layoutText(t, got, name), layoutText(t, want, name); g != w {
			t.Errorf("%s: Layout of %s differs:\n%s\nwant:\n%s", got.Path, name, g, w)
		}
	}
	for _, fn := range []string{"ngx_http_finalize_request", "ngx_unix_recv"} {
		if g, w := paramsText(t, got, fn), paramsText(t, want, fn); g != w || !strings.Contains(g, "ngx_") {
			t.Errorf("%s: Params(%s) = %s\nwant %s", got.Path, fn, g, w)
		}
	}
	if g, w := planText(t, got), planText(t, want); g != w {
		t.Errorf("%s: plan %s\nwant %s", got.Path, g, w)
	}
	if g, w := lineSitesText(t, got), lineSitesText(t, want); g != w {
		t.Errorf("%s: LineSites(ngx_recv.c:76) = %s\nwant %s", got.Path, g, w)
	}
}

func layoutText(t *testing.T, b *symbols.Binary, name string) string {
	t.Helper()
	typ, err := b.Type(name)
	if err != nil {
		t.Fatalf("%s: Type(%s): %v", b.Path, name, err)
	}
	text, err := symbols.Layout(typ)
	if err != nil {
		t.Fatalf("%s: Layout(%s): %v", b.Path, name, err)
	}
	return text
}

func typeText(typ interface{ String() string }) string {
	if typ == nil {
		return "<no type>"
	}
	return typ.String()
}

func paramsText(t *testing.T, b *symbols.Binary, name string) string {
	t.Helper()
	fns, err := b.Lookup(name)
	if err != nil {
		t.Fatalf("%s: Lookup(%s): %v", b.Path, name, err)
	}
	var out []string
	for _, fn := range fns {
		ps, err := b.Params(fn)
		if err != nil {
			t.Fatalf("%s: Params(%s): %v", b.Path, fn.Symbol, err)
		}
		for _, p := range ps {
			s := fmt.Sprintf("%s %s %s: %s@%v", fn.Symbol, fmt.Sprintf("%#x", fn.Address), p.Name, typeText(p.Type), p.Location)
			if p.Err != nil {
				s += " (" + p.Err.Error() + ")"
			}
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}

func planText(t *testing.T, b *symbols.Binary) string {
	t.Helper()
	fns, err := b.Lookup("ngx_http_finalize_request")
	if err != nil {
		t.Fatal(err)
	}
	scope, err := b.NewFunctionScope(fns[0], false)
	if err != nil {
		t.Fatalf("%s: NewFunctionScope: %v", b.Path, err)
	}
	p, err := b.CompileText("r->connection->read->eof", scope)
	if err != nil {
		t.Fatalf("%s: CompileText: %v", b.Path, err)
	}
	return fmt.Sprintf("root %+v loads %v read %+v type %s", p.Root, p.Loads, p.Read, typeText(p.Type))
}

func lineSitesText(t *testing.T, b *symbols.Binary) string {
	t.Helper()
	sites, err := b.LineSites("src/os/unix/ngx_recv.c", 76)
	if err != nil {
		t.Fatalf("%s: LineSites: %v", b.Path, err)
	}
	var out []string
	for _, s := range sites {
		fn := "?"
		if s.Function != nil {
			fn = s.Function.Symbol
		}
		ch := b.InlineChain(s.Address)
		var vars []string
		for _, v := range ch.Vars {
			name, _ := b.Attr(v, dwarf.AttrName).(string)
			vars = append(vars, name)
		}
		out = append(out, fmt.Sprintf("%#x %s %s:%d %q in %s %+v vars %v", s.Address, fn, s.File, s.Line, s.Inlined, ch.Function, ch.Calls, vars))
	}
	if len(out) == 0 {
		t.Fatalf("%s: no line sites for ngx_recv.c:76", b.Path)
	}
	return strings.Join(out, "; ")
}

// TestDWZSupplementaryLookup places the supplementary file where a
// Debian system has it, and elsewhere, as for a dbgsym package: the
// binary stripped, its debug file under .build-id, and its link
// /usr/lib/debug/.dwz/x86_64-linux-gnu/NAME.debug.
func TestDWZSupplementaryLookup(t *testing.T) {
	requireTools(t, "objcopy", "strip")
	work := t.TempDir()
	// A name no system has, so that the test never finds a real one.
	rel := filepath.Join(".dwz", "x86_64-linux-gnu", "ngxprobe-test-"+filepath.Base(work)+".debug")
	link := filepath.Join("/usr/lib/debug", rel)
	if _, err := os.Stat(link); err == nil {
		t.Fatalf("%s exists", link)
	}
	full, _, sup := dwzPair(t, work, link)
	ref := openBinary(t, nginxtest.Build(t, nginxtest.VariantO2).Binary)

	// The stripped binary and its debug file under root/.build-id.
	root := filepath.Join(work, "root")
	bin, debug := splitDebug(t, full, work, "nginx")
	id := openOpts(t, full, symbols.OpenOptions{}).BuildID
	placed := filepath.Join(root, ".build-id", id[:2], id[2:]+".debug")
	place(t, debug, placed)
	supID := openOpts(t, sup, symbols.OpenOptions{}).BuildID
	if supID == "" {
		t.Fatal("the supplementary file has no build-id")
	}
	source := "build-id " + placed

	t.Run("missing", func(t *testing.T) {
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root})
		for _, want := range []string{source + " (dwz supplementary file " + link + " (build-id " + supID + ") not found: searched " + link,
			filepath.Join(root, rel), "the types and names it holds are missing"} {
			if !strings.Contains(b.DebugSource, want) {
				t.Errorf("DebugSource = %q\nwant it to contain %q", b.DebugSource, want)
			}
		}
		if !b.HasDWARF() {
			t.Fatal("no DWARF at all")
		}
		if _, err := b.Type("ngx_event_t"); !errors.Is(err, symbols.ErrTypeNotFound) {
			t.Errorf("Type(ngx_event_t) = %v, want %v: its DWARF is in the missing file", err, symbols.ErrTypeNotFound)
		}
		paramsText(t, b, "ngx_http_finalize_request") // no panic
		lineSitesText(t, b)
	})

	t.Run("debug root", func(t *testing.T) {
		at := filepath.Join(root, rel)
		place(t, sup, at)
		defer os.Remove(at)
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root})
		if want := source + " + dwz " + at; b.DebugSource != want {
			t.Fatalf("DebugSource = %q, want %q", b.DebugSource, want)
		}
		compareDWARF(t, b, ref)
	})

	t.Run("build-id", func(t *testing.T) {
		at := filepath.Join(root, ".build-id", supID[:2], supID[2:]+".debug")
		place(t, sup, at)
		defer os.Remove(at)
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root})
		if want := source + " + dwz " + at; b.DebugSource != want {
			t.Fatalf("DebugSource = %q, want %q", b.DebugSource, want)
		}
		if _, err := b.Type("ngx_event_t"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("debug dir", func(t *testing.T) {
		dir := filepath.Join(work, "debug-dir")
		at := filepath.Join(dir, rel)
		place(t, sup, at)
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root, DebugDirs: []string{dir}})
		if want := source + " + dwz " + at; b.DebugSource != want {
			t.Fatalf("DebugSource = %q, want %q", b.DebugSource, want)
		}
	})

	t.Run("fetch", func(t *testing.T) {
		var asked []symbols.FetchRequest
		fetch := func(path string) func(symbols.FetchRequest) (string, error) {
			return func(r symbols.FetchRequest) (string, error) {
				asked = append(asked, r)
				if path == "" {
					return "", errors.New("404")
				}
				return path, nil
			}
		}
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root, Fetch: fetch(sup)})
		if want := source + " + dwz debuginfod " + sup; b.DebugSource != want {
			t.Fatalf("DebugSource = %q, want %q", b.DebugSource, want)
		}
		if len(asked) != 1 || asked[0].BuildID != supID || asked[0].Path != bin || asked[0].Kind != symbols.Nginx {
			t.Errorf("Fetch asked %+v, want once for build-id %s of %s", asked, supID, bin)
		}
		b = openOpts(t, bin, symbols.OpenOptions{DebugRoot: root, Fetch: fetch(full)})
		if want := "debuginfod: " + full + ": not the supplementary file (build-id"; !strings.Contains(b.DebugSource, want) {
			t.Errorf("DebugSource = %q, want it to contain %q", b.DebugSource, want)
		}
		b = openOpts(t, bin, symbols.OpenOptions{DebugRoot: root, Fetch: fetch("")})
		if want := "; debuginfod: 404;"; !strings.Contains(b.DebugSource, want) {
			t.Errorf("DebugSource = %q, want it to contain %q", b.DebugSource, want)
		}
	})

	t.Run("corrupt", func(t *testing.T) {
		// The right file by its build-id, with a broken .debug_info.
		at := filepath.Join(root, rel)
		place(t, sup, at)
		defer os.Remove(at)
		f, err := elf.Open(at)
		if err != nil {
			t.Fatal(err)
		}
		off := f.Section(".debug_info").Offset
		f.Close()
		data, err := os.ReadFile(at)
		if err != nil {
			t.Fatal(err)
		}
		data[off+4], data[off+5] = 9, 9 // the first unit's version
		if err := os.WriteFile(at, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b := openOpts(t, bin, symbols.OpenOptions{DebugRoot: root})
		want := source + " (dwz supplementary file " + at + " unusable: supplementary file: .debug_info at 0x0: unit version 2313, want 2 to 5"
		if !strings.HasPrefix(b.DebugSource, want) || !b.HasDWARF() {
			t.Errorf("DebugSource = %q, want it to start with %q", b.DebugSource, want)
		}
	})
}

// place copies src to dst, making dst's directory.
func place(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, src, dst)
}
