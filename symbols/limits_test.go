package symbols_test

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestOpenNotELF: a file that is not a whole ELF file gets an error that
// names it and says what was expected, never a bare "EOF".
func TestOpenNotELF(t *testing.T) {
	nginx := nginxtest.Build(t, nginxtest.VariantO2).Binary
	data, err := os.ReadFile(nginx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f, err := elf.Open(nginx)
	if err != nil {
		t.Fatal(err)
	}
	info := f.Section(".debug_info")
	f.Close()
	// A section header that points past the end: .debug_info's offset
	// moved beyond the file.
	past := append([]byte(nil), data...)
	shoff := binary.LittleEndian.Uint64(past[0x28:])
	shentsize := uint64(binary.LittleEndian.Uint16(past[0x3a:]))
	for i := uint64(0); i < uint64(binary.LittleEndian.Uint16(past[0x3c:])); i++ {
		hdr := past[shoff+i*shentsize:]
		if binary.LittleEndian.Uint64(hdr[0x18:]) == info.Offset && binary.LittleEndian.Uint64(hdr[0x20:]) == info.Size {
			binary.LittleEndian.PutUint64(hdr[0x18:], uint64(len(past))+0x1000)
		}
	}
	for _, c := range []struct {
		name, path string
		want       []string
	}{
		{"empty", write("empty", nil), []string{"not an ELF file", "empty"}},
		{"text", write("text", []byte("#!/bin/sh\necho hello\n")), []string{"not an ELF file", `starts with "#!/b"`}},
		{"three bytes", write("short", []byte("\x7fEL")), []string{"not an ELF file"}},
		{"directory", dir, []string{"not an ELF file", "directory"}},
		{"headers cut", write("nginx-3000", data[:3000]), []string{"not an ELF file", "truncated", "ends past the end of the file (file size 3000 bytes)"}},
		{"sections cut", write("nginx-half", data[:len(data)/2]), []string{"truncated: its section header table (offset 0x", "ends past the end of the file (file size"}},
		{"section past the end", write("nginx-past", past), []string{"truncated: section .debug_info ends past the end of the file", "offset 0x", "file size"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := symbols.Open(c.path, nil)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, c.path+": ") || !errors.Is(err, symbols.ErrNotELF) {
				t.Errorf("error %q does not start with the path, or is not ErrNotELF", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			t.Log(msg)
		})
	}
}

// checkLimitError checks that err is a bound's, and says which and how
// to raise it.
func checkLimitError(t *testing.T, err error, field string) {
	t.Helper()
	var le *symbols.LimitError
	if !errors.Is(err, symbols.ErrLimit) || !errors.As(err, &le) {
		t.Fatalf("error %v, want a *LimitError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, field) || !strings.Contains(msg, "raise it") {
		t.Errorf("error %q does not name %s and how to raise it", msg, field)
	}
}

// TestLimitsRealFiles: the real files open within the default bounds,
// and each bound, set below what a real file needs, is an error that
// names it.
func TestLimitsRealFiles(t *testing.T) {
	nginx := nginxtest.Build(t, nginxtest.VariantO2).Binary
	opts := func(o symbols.OpenOptions) *symbols.OpenOptions {
		o.DebugRoot = emptyDebugRoot()
		return &o
	}
	b, err := symbols.Open(nginx, opts(symbols.OpenOptions{}))
	if err != nil {
		t.Fatalf("nginx within the defaults: %v", err)
	}
	if _, err := b.LineSites("src/http/ngx_http_request.c", 100); err != nil && errors.Is(err, symbols.ErrLimit) {
		t.Fatalf("nginx's line tables within the defaults: %v", err)
	}
	b.Close()
	if libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"; fileExists(libc) {
		if b, err := symbols.Open(libc, &symbols.OpenOptions{}); err != nil {
			t.Errorf("libc (with libc6-dbg's debug file, if installed) within the defaults: %v", err)
		} else {
			t.Logf("libc: debug info %s", b.DebugSource)
			b.Close()
		}
	}

	_, err = symbols.Open(nginx, opts(symbols.OpenOptions{MaxDebugInfo: 1 << 20}))
	checkLimitError(t, err, "symbols.OpenOptions.MaxDebugInfo")
	_, err = symbols.Open(nginx, opts(symbols.OpenOptions{MaxUnits: 100}))
	checkLimitError(t, err, "symbols.OpenOptions.MaxUnits")
	t.Log(err)

	b, err = symbols.Open(nginx, opts(symbols.OpenOptions{MaxLineRows: 100}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.LineSites("src/http/ngx_http_request.c", 100)
	checkLimitError(t, err, "symbols.OpenOptions.MaxLineRows")
	t.Log(err)
}

// TestLimitCompressedBomb: a compressed section whose header claims a
// terabyte is refused before anything is decompressed.
func TestLimitCompressedBomb(t *testing.T) {
	requireTools(t, "objcopy")
	bin := filepath.Join(t.TempDir(), "bomb")
	copyFile(t, buildFixture(t, "layout.c", "-O2", "-g"), bin)
	run(t, "objcopy", "--compress-debug-sections=zlib", bin)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(".debug_info")
	f.Close()
	if s == nil || s.Flags&elf.SHF_COMPRESSED == 0 {
		t.Fatal("no compressed .debug_info")
	}
	// Elf64_Chdr: ch_type, ch_reserved, ch_size, ch_addralign.
	binary.LittleEndian.PutUint64(data[s.Offset+8:], 1<<40)
	if err := os.WriteFile(bin, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = symbols.Open(bin, &symbols.OpenOptions{DebugRoot: emptyDebugRoot()})
	checkLimitError(t, err, "symbols.OpenOptions.MaxDebugInfo")
	t.Log(err)
}

// TestLimitLineTable: ReadLineTableLimit stops at the bound, with the
// rows read so far.
func TestLimitLineTable(t *testing.T) {
	b := openBinary(t, buildFixture(t, "layout.c", "-O2", "-g"))
	cu, err := b.DWARF().Reader().Next()
	if err != nil || cu == nil {
		t.Fatal(err)
	}
	all, err := symbols.ReadLineTableLimit(b.DWARF(), cu, 0, b.Path)
	if err != nil || len(all.Rows) < 4 {
		t.Fatalf("%d rows, %v", len(all.Rows), err)
	}
	some, err := symbols.ReadLineTableLimit(b.DWARF(), cu, 3, b.Path)
	checkLimitError(t, err, "symbols.OpenOptions.MaxLineRows")
	if len(some.Rows) != 3 {
		t.Errorf("%d rows, want the 3 read", len(some.Rows))
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
