package symbols_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// debugFixture builds clones.c with -rdynamic, so that exported_entry is
// in .dynsym, and with embedded DWARF; the tests derive stripped copies.
func debugFixture(t *testing.T) string {
	t.Helper()
	requireTools(t, "gcc", "objcopy", "strip")
	return buildFixture(t, "clones.c", "-O2", "-g", "-rdynamic")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// splitDebug writes dir/name (stripped of everything, symbols included)
// and dir/name.debug (objcopy --only-keep-debug).
func splitDebug(t *testing.T, full, dir, name string) (bin, debug string) {
	t.Helper()
	bin = filepath.Join(dir, name)
	debug = bin + ".debug"
	run(t, "objcopy", "--only-keep-debug", full, debug)
	copyFile(t, full, bin)
	run(t, "strip", "--strip-all", bin)
	return bin, debug
}

func openWith(t *testing.T, path, root string) *symbols.Binary {
	t.Helper()
	b, err := symbols.Open(path, &symbols.OpenOptions{DebugRoot: root})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// checkFullDebug asserts that b sees what the unstripped binary sees: the
// static clone by its .symtab name (from the debug file) and parameters.
func checkFullDebug(t *testing.T, b, ref *symbols.Binary) {
	t.Helper()
	if !b.HasDWARF() {
		t.Fatalf("HasDWARF() = false (DebugSource %q)", b.DebugSource)
	}
	for _, name := range []string{"isra_sum", "exported_entry", "hot_path"} {
		got, err := b.Lookup(name)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", name, err)
		}
		want, _ := ref.Lookup(name)
		if len(got) != len(want) {
			t.Fatalf("Lookup(%s) = %v, the unstripped binary has %v", name, got, want)
		}
		for i := range got {
			if got[i].Symbol != want[i].Symbol || got[i].Offset != want[i].Offset {
				t.Errorf("Lookup(%s)[%d] = %s at offset %#x, unstripped: %s at %#x", name, i, got[i].Symbol, got[i].Offset, want[i].Symbol, want[i].Offset)
			}
			ps, err := b.Params(got[i])
			if err != nil || len(ps) == 0 {
				t.Errorf("Params(%s) = %v, %v", got[i].Symbol, ps, err)
			}
		}
	}
	if _, err := b.Type("struct conn"); err != nil {
		t.Errorf("Type(struct conn): %v", err)
	}
}

func TestDebugInfoEmbedded(t *testing.T) {
	full := debugFixture(t)
	b := openWith(t, full, t.TempDir())
	if b.DebugSource != "embedded" || !b.HasDWARF() || b.BuildID == "" {
		t.Fatalf("DebugSource %q, HasDWARF %v, BuildID %q; want embedded DWARF and a build id", b.DebugSource, b.HasDWARF(), b.BuildID)
	}
}

func TestDebugInfoDebuglink(t *testing.T) {
	full := debugFixture(t)
	ref := openBinary(t, full)
	// gdb's places for a debuglink file: beside the binary, in .debug/
	// beside it, and under the global debug dir followed by the binary's dir.
	for _, place := range []string{"same-dir", "dot-debug", "global-root"} {
		t.Run(place, func(t *testing.T) {
			dir, root := t.TempDir(), t.TempDir()
			bin, debug := splitDebug(t, full, dir, "prog")
			// objcopy records the base name and the CRC of the debug file.
			run(t, "objcopy", "--add-gnu-debuglink="+debug, bin)
			if out := run(t, "readelf", "--string-dump=.gnu_debuglink", bin); !strings.Contains(out, "prog.debug") {
				t.Fatalf("no .gnu_debuglink in %s:\n%s", bin, out)
			}
			var where string
			switch place {
			case "same-dir":
				where = debug
			case "dot-debug":
				where = filepath.Join(dir, ".debug", "prog.debug")
			case "global-root":
				real, err := filepath.EvalSymlinks(dir)
				if err != nil {
					t.Fatal(err)
				}
				where = filepath.Join(root, real, "prog.debug")
			}
			if where != debug {
				if err := os.MkdirAll(filepath.Dir(where), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(debug, where); err != nil {
					t.Fatal(err)
				}
			}
			b := openWith(t, bin, root)
			if want := "debuglink " + where; b.DebugSource != want {
				t.Fatalf("DebugSource = %q, want %q", b.DebugSource, want)
			}
			checkFullDebug(t, b, ref)

			// A debug file whose CRC does not match the link is not used.
			f, err := os.OpenFile(where, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte{0})
			f.Close()
			stale := openWith(t, bin, root)
			if stale.HasDWARF() || stale.DebugSource != "" {
				t.Errorf("debug file with a wrong CRC: HasDWARF %v, DebugSource %q; want none", stale.HasDWARF(), stale.DebugSource)
			}
		})
	}
}

func TestDebugInfoBuildID(t *testing.T) {
	full := debugFixture(t)
	ref := openBinary(t, full)
	if ref.BuildID == "" || len(ref.BuildID) < 3 {
		t.Fatalf("fixture has no build id (%q): gcc without --build-id?", ref.BuildID)
	}
	bin, debug := splitDebug(t, full, t.TempDir(), "prog")
	root := t.TempDir()
	want := filepath.Join(root, ".build-id", ref.BuildID[:2], ref.BuildID[2:]+".debug")
	if err := os.MkdirAll(filepath.Dir(want), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(debug, want); err != nil {
		t.Fatal(err)
	}
	b := openWith(t, bin, root)
	if b.BuildID != ref.BuildID {
		t.Errorf("stripped BuildID %q, unstripped %q", b.BuildID, ref.BuildID)
	}
	if b.DebugSource != "build-id "+want {
		t.Fatalf("DebugSource = %q, want %q", b.DebugSource, "build-id "+want)
	}
	checkFullDebug(t, b, ref)
}

func TestDebugInfoNone(t *testing.T) {
	full := debugFixture(t)
	ref := openBinary(t, full)
	bin, _ := splitDebug(t, full, t.TempDir(), "prog")
	b := openWith(t, bin, t.TempDir())
	if b.HasDWARF() || b.DWARF() != nil || b.DebugSource != "" {
		t.Fatalf("HasDWARF %v, DebugSource %q; want no debug info", b.HasDWARF(), b.DebugSource)
	}
	// The exported function is still found, through .dynsym.
	fns, err := b.Lookup("exported_entry")
	if err != nil || len(fns) != 1 {
		t.Fatalf("Lookup(exported_entry) = %v, %v; want it from .dynsym", fns, err)
	}
	want, _ := ref.Lookup("exported_entry")
	if fns[0].Symbol != "exported_entry" || !fns[0].Exported || fns[0].Offset != want[0].Offset || fns[0].Address != want[0].Address {
		t.Errorf("exported_entry: %+v; unstripped: %+v", *fns[0], *want[0])
	}
	_, err = b.Params(fns[0])
	if !errors.Is(err, symbols.ErrNoDebugInfo) {
		t.Errorf("Params: %v, want ErrNoDebugInfo", err)
	}
	if err != nil && !strings.Contains(err.Error(), "debuginfod") {
		t.Errorf("Params error does not say where debug info comes from: %v", err)
	}
	if _, err := b.Type("struct conn"); !errors.Is(err, symbols.ErrNoDebugInfo) {
		t.Errorf("Type: %v, want ErrNoDebugInfo", err)
	}
	// Static functions were only in .symtab.
	if _, err := b.Lookup("isra_sum"); !errors.Is(err, symbols.ErrFunctionNotFound) {
		t.Errorf("Lookup(isra_sum) on a stripped binary: %v, want ErrFunctionNotFound", err)
	}
}
