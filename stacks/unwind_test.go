package stacks_test

// Unit tests that need no privileges: maps parsing, synthetic captures
// against a fake /proc, and real captures of the fixture taken with
// ptrace (a child that asks to be traced needs no capability).

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

func TestParseMaps(t *testing.T) {
	const text = `55d0c6a00000-55d0c6a26000 r--p 00000000 fd:01 1234                       /usr/sbin/nginx
55d0c6a26000-55d0c6b0f000 r-xp 00026000 fd:01 1234                       /usr/sbin/nginx
55d0c8000000-55d0c8021000 rw-p 00000000 00:00 0                          [heap]
7f00aa000000-7f00aa021000 rw-p 00000000 00:00 0 
7f00ab000000-7f00ab100000 r-xp 00001000 fd:01 99                         /opt/my lib/libx.so (deleted)
7f00ac000000-7f00ac001000 r-xp 00000000 fd:01 98                         /opt/two  spaces/liby.so
7ffd1da00000-7ffd1da21000 rw-p 00000000 00:00 0                          [stack]
short line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`
	got, err := stacks.ParseMaps(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []stacks.Mapping{
		{Start: 0x55d0c6a00000, End: 0x55d0c6a26000, Offset: 0, Exec: false, Path: "/usr/sbin/nginx"},
		{Start: 0x55d0c6a26000, End: 0x55d0c6b0f000, Offset: 0x26000, Exec: true, Path: "/usr/sbin/nginx"},
		{Start: 0x55d0c8000000, End: 0x55d0c8021000, Path: "[heap]"},
		{Start: 0x7f00aa000000, End: 0x7f00aa021000, Path: ""},
		{Start: 0x7f00ab000000, End: 0x7f00ab100000, Offset: 0x1000, Exec: true, Path: "/opt/my lib/libx.so (deleted)"},
		{Start: 0x7f00ac000000, End: 0x7f00ac001000, Exec: true, Path: "/opt/two  spaces/liby.so"},
		{Start: 0x7ffd1da00000, End: 0x7ffd1da21000, Path: "[stack]"},
		{Start: 0xffffffffff600000, End: 0xffffffffff601000, Exec: true, Path: "[vsyscall]"},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseMaps: %d mappings, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("mapping %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}

	for _, bad := range []string{
		"zzzz-1000 r-xp 00000000 00:00 0 /x\n",
		"1000 r-xp 00000000 00:00 0 /x\n",
		"1000-2000 r-xp nothex 00:00 0 /x\n",
		"1000-zz r-xp 00000000 00:00 0 /x\n",
	} {
		if ms, err := stacks.ParseMaps(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseMaps(%q) = %+v, want an error", bad, ms)
		}
	}
	if ms, err := stacks.ParseMaps(strings.NewReader("")); err != nil || len(ms) != 0 {
		t.Errorf("ParseMaps(\"\") = %v, %v; want nothing", ms, err)
	}
}

// fakeProc writes root/pid/maps mapping the ELF file exe at its link address (plus a base when it is PIE), a stack
// and anonymous memory. It returns the process address of function fn.
func fakeProc(t *testing.T, root string, pid int, exe, fn string) (pc uint64, stackLo, stackHi uint64) {
	t.Helper()
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var base uint64
	if f.Type == elf.ET_DYN {
		base = 0x555500000000
	}
	var b strings.Builder
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		perm := "r-"
		if p.Flags&elf.PF_W != 0 {
			perm = "rw"
		}
		if p.Flags&elf.PF_X != 0 {
			perm += "xp"
		} else {
			perm += "-p"
		}
		start := base + p.Vaddr&^0xfff
		end := (base + p.Vaddr + p.Filesz + 0xfff) &^ 0xfff
		fmt.Fprintf(&b, "%x-%x %s %08x 00:00 1 %s\n", start, end, perm, p.Off&^0xfff, exe)
	}
	stackLo, stackHi = 0x7ffd00000000, 0x7ffd00021000
	fmt.Fprintf(&b, "7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \n")
	fmt.Fprintf(&b, "%x-%x rw-p 00000000 00:00 0 [stack]\n", stackLo, stackHi)
	dir := filepath.Join(root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "maps"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == fn && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return base + s.Value, stackLo, stackHi
		}
	}
	t.Fatalf("%s has no function %s", exe, fn)
	return 0, 0, 0
}

// TestUnwindBadCaptures feeds captures that no real stack holds: each
// must come back truncated, with a reason that says what went wrong, and
// with no frame that is not the function the pc is in.
func TestUnwindBadCaptures(t *testing.T) {
	exe := fixture(t, "deep")
	root := t.TempDir()
	const pid = 4242
	pc, stackLo, _ := fakeProc(t, root, pid, exe, "target")
	garbage := make([]byte, 512)
	for i := range garbage {
		garbage[i] = 0x41
	}
	// A stack of return addresses that all point into target: a real
	// module, but a stack pointer outside every mapping.
	selfLoop := make([]byte, 512)
	for i := 0; i < len(selfLoop); i += 8 {
		binary.LittleEndian.PutUint64(selfLoop[i:], pc+1)
	}
	regs := func(pc, sp uint64) map[uint64]uint64 {
		return map[uint64]uint64{stacks.RegRA: pc, symbols.RegRSP: sp, symbols.RegRBP: 0, symbols.RegRBX: 1}
	}
	cases := []struct {
		name       string
		c          stacks.Capture
		frames     int    // how many frames (all in target)
		reasonHas  string // a word of the reason
		reasonHas2 string
	}{
		{"sp outside every mapping, nothing copied", stacks.Capture{PID: pid, Regs: regs(pc, 0xdead0000), Requested: 8192}, 1, "stack", "0xdead0000"},
		{"sp outside every mapping, garbage copied", stacks.Capture{PID: pid, Regs: regs(pc, 0xdead0000), Stack: garbage, Requested: 512}, 1, "outside every mapping", "0x4141414141414141"},
		{"sp at the top of the address space", stacks.Capture{PID: pid, Regs: regs(pc, ^uint64(0)-7), Stack: garbage[:64], Requested: 512}, 1, "stack", ""},
		{"pc outside every mapping", stacks.Capture{PID: pid, Regs: regs(0x1234, stackLo+0x100), Stack: garbage, Requested: 512}, 0, "outside every mapping", "0x1234"},
		{"pc in anonymous memory", stacks.Capture{PID: pid, Regs: regs(0x7f0000000100, stackLo+0x100), Requested: 512}, 0, "anonymous", ""},
		{"pc on the stack", stacks.Capture{PID: pid, Regs: regs(stackLo+0x10, stackLo+0x100), Requested: 512}, 0, "[stack]", ""},
		{"no registers", stacks.Capture{PID: pid}, 0, "outside every mapping", ""},
		{"unknown pid", stacks.Capture{PID: 999999999, Regs: regs(pc, stackLo)}, 0, "outside every mapping", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := stacks.NewUnwinder(root)
			defer u.Close()
			var st stacks.Stack
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Unwind panicked: %v", r)
					}
				}()
				st = u.Unwind(tc.c)
			}()
			if !st.Truncated || st.Reason == "" {
				t.Errorf("want a truncated stack with a reason, got %+v", st)
			}
			if !strings.Contains(st.Reason, tc.reasonHas) || !strings.Contains(st.Reason, tc.reasonHas2) {
				t.Errorf("reason %q, want it to mention %q and %q", st.Reason, tc.reasonHas, tc.reasonHas2)
			}
			if len(st.Frames) != tc.frames {
				t.Errorf("%d frames, want %d:\n%s", len(st.Frames), tc.frames, formatStack(st))
			}
			for _, f := range st.Frames {
				if f.Symbol != "target" {
					t.Errorf("frame %s: want only target, where the pc is:\n%s", f.Symbol, formatStack(st))
				}
			}
		})
	}

	// A stack of return addresses into the same function, with the stack
	// pointer outside every mapping: the unwinder follows what the CFI
	// says; it must stop within the copied bytes.
	t.Run("return addresses all into one function", func(t *testing.T) {
		u := stacks.NewUnwinder(root)
		defer u.Close()
		st := u.Unwind(stacks.Capture{PID: pid, Regs: regs(pc, 0xdead0000), Stack: selfLoop, Requested: 512})
		if !st.Truncated || st.Reason == "" {
			t.Errorf("want a truncated stack with a reason, got:\n%s", formatStack(st))
		}
		if len(st.Frames) > len(selfLoop)/8+1 {
			t.Errorf("%d frames out of %d copied bytes:\n%s", len(st.Frames), len(selfLoop), formatStack(st))
		}
	})
}

// TestUnwindPtraceCapture unwinds real captures of the fixture, taken at
// the entry of target: the whole stack, from target through main and
// libc's start code to _start, with CFI from .eh_frame and from
// .debug_frame.
func TestUnwindPtraceCapture(t *testing.T) {
	for _, name := range []string{"deep", "deep-debugframe"} {
		t.Run(name, func(t *testing.T) {
			bin := fixture(t, name)
			const depth = 4
			atTarget(t, bin, 8192, func(tr tracee) {
				u := stacks.NewUnwinder("")
				defer u.Close()
				st := u.Unwind(tr.capture)
				checkFullStack(t, st, filepath.Base(bin), depth, libcStart(t, tr.pid))
				if len(st.Notes) != 0 {
					t.Errorf("notes %q, want none", st.Notes)
				}
				// The same capture again: served from the module caches.
				again := u.Unwind(tr.capture)
				if !reflect.DeepEqual(again, st) {
					t.Errorf("second unwind differs:\n%s\nfirst:\n%s", formatStack(again), formatStack(st))
				}
				// Less stack copied: a truncated prefix of the same stack.
				for _, n := range []int{0, 8, 512, 1024} {
					c := tr.capture
					c.Stack = c.Stack[:min(n, len(c.Stack))]
					short := u.Unwind(c)
					got := checkPrefix(t, short, filepath.Base(bin), depth)
					if got == 0 {
						t.Errorf("%d bytes: no frame at all, want at least target", n)
					}
					if got < len(st.Frames) && (!short.Truncated || short.Reason == "") {
						t.Errorf("%d bytes: %d of %d frames, want truncated with a reason:\n%s", n, got, len(st.Frames), formatStack(short))
					}
					if got == len(st.Frames) && !reflect.DeepEqual(short, st) {
						t.Errorf("%d bytes: all frames, but not the same stack:\n%s", n, formatStack(short))
					}
				}
				// A return address that points into the fixture's file, but
				// into a mapping that is not code (its ELF header): not a
				// frame.
				c := tr.capture
				c.Stack = append([]byte(nil), c.Stack...)
				binary.LittleEndian.PutUint64(c.Stack, dataAddr(t, tr.pid, bin))
				bad := u.Unwind(c)
				if !bad.Truncated || !strings.Contains(bad.Reason, "not executable") {
					t.Errorf("return address into data: want truncated because it is not executable, got:\n%s", formatStack(bad))
				}
				if got := checkPrefix(t, bad, filepath.Base(bin), depth); got != 1 {
					t.Errorf("return address into data: %d frames, want only target:\n%s", got, formatStack(bad))
				}
			}, fmt.Sprint(depth), "20")
		})
	}
}

// dataAddr is an address in a mapping of bin in pid that is not
// executable.
func dataAddr(t *testing.T, pid int, bin string) uint64 {
	t.Helper()
	maps, err := stacks.ReadMaps("", pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.Path == bin && !m.Exec {
			return m.Start + 0x40
		}
	}
	t.Fatalf("pid %d maps no data of %s", pid, bin)
	return 0
}

// TestUnwindWithoutCFI unwinds fixtures that have no CFI at all (built
// without unwind tables, .eh_frame and .debug_frame removed): with frame
// pointers the fallback walks them; without, the stack stops. Either way
// no frame may be invented.
func TestUnwindWithoutCFI(t *testing.T) {
	const depth = 4
	t.Run("frame pointers", func(t *testing.T) {
		bin := fixture(t, "deep-nocfi-fp")
		atTarget(t, bin, 8192, func(tr tracee) {
			u := stacks.NewUnwinder("")
			defer u.Close()
			st := u.Unwind(tr.capture)
			t.Logf("frame-pointer fallback:\n%s", formatStack(st))
			n := checkPrefix(t, st, filepath.Base(bin), depth)
			// The frame-pointer walk must reach main, with every frame
			// (inlined_step comes from DWARF, not from the walk).
			if want := len(wantFixture(depth)); n < want {
				t.Errorf("frame-pointer walk stopped after %d frames, want at least %d (through main)", n, want)
			}
		}, fmt.Sprint(depth), "20")
	})
	t.Run("no frame pointers", func(t *testing.T) {
		bin := fixture(t, "deep-nocfi")
		atTarget(t, bin, 8192, func(tr tracee) {
			u := stacks.NewUnwinder("")
			defer u.Close()
			st := u.Unwind(tr.capture)
			t.Logf("no CFI, no frame pointers:\n%s", formatStack(st))
			if !st.Truncated || st.Reason == "" {
				t.Errorf("want a truncated stack with a reason")
			}
			if checkPrefix(t, st, filepath.Base(bin), depth) == 0 {
				t.Errorf("no frame at all, want at least target")
			}
		}, fmt.Sprint(depth), "20")
	})
}

// TestUnwindCorruptCFI runs copies of the fixture whose .eh_frame is
// overwritten (the program itself never unwinds, so it runs as before):
// opening the module must not panic, and the stack is a truncated prefix
// of the real one.
func TestUnwindCorruptCFI(t *testing.T) {
	const depth = 2
	src := fixture(t, "deep")
	rng := rand.New(rand.NewSource(1))
	for _, how := range []string{"zeros", "ones", "random", "lengths"} {
		t.Run(how, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "deep-corrupt")
			copyFile(t, src, bin)
			corruptSection(t, bin, ".eh_frame", func(b []byte) {
				switch how {
				case "zeros":
					clear(b)
				case "ones":
					for i := range b {
						b[i] = 0xff
					}
				case "random":
					rng.Read(b)
				case "lengths":
					// Keep the records, but give every 4th word a huge value:
					// lengths and offsets that point past the section.
					for i := 0; i+4 <= len(b); i += 16 {
						binary.LittleEndian.PutUint32(b[i:], 0x7ffffff0)
					}
				}
			})
			atTarget(t, bin, 8192, func(tr tracee) {
				u := stacks.NewUnwinder("")
				defer u.Close()
				var st stacks.Stack
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("Unwind panicked on corrupt .eh_frame: %v", r)
						}
					}()
					st = u.Unwind(tr.capture)
				}()
				t.Logf(".eh_frame %s:\n%s", how, formatStack(st))
				if !st.Truncated || st.Reason == "" {
					t.Errorf("want a truncated stack with a reason")
				}
				checkPrefix(t, st, filepath.Base(bin), depth)
			}, fmt.Sprint(depth), "20")
		})
	}
}

// corruptSection rewrites the bytes of section name of the ELF file path.
func corruptSection(t *testing.T, path, name string, fn func([]byte)) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(name)
	if s == nil {
		f.Close()
		t.Fatalf("%s has no %s", path, name)
	}
	off, size := s.Offset, s.Size
	f.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fn(data[off : off+size])
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestUnwindReplacedModule replaces the fixture's file on disk (renaming
// another build over it, as package managers do) while it runs: the
// mapped file is then "deleted", and the file at its path is another
// build. The stack must say so in a note and still name the frames from
// the mapped file; where /proc/PID/map_files can't be read (it needs
// CAP_SYS_ADMIN), the unwinder can't read the mapped file and must stop
// with a reason rather than use the other build.
func TestUnwindReplacedModule(t *testing.T) {
	const depth = 3
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	copyFile(t, fixture(t, "deep"), bin)
	other := fixture(t, "deep-other")
	atTarget(t, bin, 8192, func(tr tracee) {
		libc := libcStart(t, tr.pid)
		tmp := filepath.Join(dir, "app.new")
		copyFile(t, other, tmp)
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
		u := stacks.NewUnwinder("")
		defer u.Close()
		st := u.Unwind(tr.capture)
		t.Logf("after the replacement:\n%s", formatStack(st))
		if mapFilesReadable(tr.pid) {
			checkFullStack(t, st, "app", depth, libc)
			ok := false
			for _, n := range st.Notes {
				if strings.Contains(n, bin) && (strings.Contains(n, "deleted") || strings.Contains(n, "replaced")) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("notes %q: want one saying %s was deleted or replaced", st.Notes, bin)
			}
			return
		}
		if !st.Truncated || !strings.Contains(st.Reason, "deleted") {
			t.Errorf("map_files is not readable: want a stack truncated because %s was deleted, got:\n%s", bin, formatStack(st))
		}
		checkPrefix(t, st, "app", depth)
	}, fmt.Sprint(depth), "20")
}

// mapFilesReadable reports whether this process may open the files of
// /proc/PID/map_files (CAP_SYS_ADMIN).
func mapFilesReadable(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/map_files", pid)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return false
	}
	f, err := os.Open(filepath.Join(dir, ents[0].Name()))
	if err != nil {
		return false
	}
	f.Close()
	return true
}
