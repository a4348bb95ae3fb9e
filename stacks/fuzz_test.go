package stacks_test

// Fuzzers of what a traced process controls: its stack (cycles, huge
// offsets, pointers into nowhere), the CFI of the files it maps, and
// /proc/PID/maps. The seed corpora under testdata/fuzz are real: stacks
// captured with ptrace from testdata/unwind-fuzz.elf (deep.c, built
// without PIE so that its addresses hold in any process) and the maps of
// real processes, with hostile variants; TestGenerateFuzzSeeds writes
// them. CI runs the seeds as ordinary tests; bench/fuzz.sh fuzzes.

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// unwindFuzzELF is the module FuzzUnwind maps: deep.c with its own CFI in
// .debug_frame (and crt's in .eh_frame), written by TestGenerateFuzzSeeds.
const unwindFuzzELF = "testdata/unwind-fuzz.elf"

var unwindELF = sync.OnceValues(func() ([]byte, error) { return os.ReadFile(unwindFuzzELF) })

// overwriteSection copies content over section name of the ELF file
// data, cut or padded with zeros to the section's size: the rest of the
// file stays as it is.
func overwriteSection(t testing.TB, data []byte, name string, content []byte) {
	f, err := elf.NewFile(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(name)
	if s == nil {
		t.Fatalf("%s has no %s", unwindFuzzELF, name)
	}
	dst := data[s.Offset : s.Offset+s.Size]
	clear(dst[copy(dst, content):])
}

// bounded runs fn, failing the test when it panics or takes longer than
// 10 s.
func bounded(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				buf := make([]byte, 64<<10)
				done <- fmt.Sprintf("panic: %v\n%s", p, buf[:runtime.Stack(buf, false)])
			}
			close(done)
		}()
		fn()
	}()
	select {
	case msg, failed := <-done:
		if failed {
			t.Fatalf("%s: %s", what, msg)
		}
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s: still running after 10 s:\n%s", what, buf[:runtime.Stack(buf, true)])
	}
}

func FuzzUnwind(f *testing.F) {
	f.Fuzz(func(t *testing.T, ehFrame, debugFrame, stack []byte, pc, sp, bp, bx uint64) {
		base, err := unwindELF()
		if err != nil {
			t.Fatal(err)
		}
		data := append([]byte(nil), base...)
		overwriteSection(t, data, ".eh_frame", ehFrame)
		overwriteSection(t, data, ".debug_frame", debugFrame)
		root := t.TempDir()
		exe := filepath.Join(root, "deep")
		if err := os.WriteFile(exe, data, 0o644); err != nil {
			t.Fatal(err)
		}
		const pid = 4242
		fakeProc(t, root, pid, exe, "target")
		u := stacks.NewUnwinder(root)
		defer u.Close()
		u.Debug = &symbols.OpenOptions{DebugRoot: filepath.Join(root, "no-debug-root")}
		u.MaxStackBytes = 64 << 10
		c := stacks.Capture{
			PID:   pid,
			Regs:  map[uint64]uint64{stacks.RegRA: pc, symbols.RegRSP: sp, symbols.RegRBP: bp, symbols.RegRBX: bx},
			Stack: stack,
			// A uretprobe's trampoline replaced the first return address.
			Returns:   map[uint64]uint64{sp + 8: pc},
			Requested: len(stack),
		}
		bounded(t, "Unwind", func() {
			st := u.Unwind(c)
			if st.Truncated && st.Reason == "" {
				t.Fatalf("truncated stack without a reason:\n%s", formatStack(st))
			}
			if len(st.Frames) > stacks.DefaultMaxFrames*65 {
				t.Fatalf("%d frames, more than %d frames of at most 64 inlined calls each", len(st.Frames), stacks.DefaultMaxFrames)
			}
		})
	})
}

func FuzzParseMaps(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		for _, max := range []int{0, 3} {
			bounded(t, "ParseMaps", func() {
				ms, err := stacks.ParseMapsLimit(strings.NewReader(text), max, "maps")
				if err != nil {
					if err.Error() == "" || !strings.HasPrefix(err.Error(), "maps: ") {
						t.Fatalf("ParseMapsLimit(%d): error %q does not say where", max, err)
					}
					return
				}
				if max > 0 && len(ms) > max {
					t.Fatalf("ParseMapsLimit(%d): %d mappings", max, len(ms))
				}
				for _, m := range ms {
					if strings.Contains(m.Path, "\n") || strings.HasPrefix(m.Path, " ") || strings.HasPrefix(m.Path, "\t") {
						t.Fatalf("mapping %+v: path with a newline, or starting with a blank", m)
					}
				}
			})
		}
	})
}

// hostileMaps are /proc/PID/maps lines that a process can make the kernel
// write, or that a fake /proc can hold: spaces, a newline (escaped by the
// kernel), " (deleted)" in a name that was not deleted, a path of
// PATH_MAX, fields missing, numbers out of range.
func hostileMaps(exec string) []string {
	long := "/" + strings.Repeat("d/", 2047)
	return []string{
		exec + "7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /tmp/evil\\012name.so\n",
		exec + "7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /tmp/not really (deleted)\n",
		exec + "7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /tmp/x.so (deleted) (deleted)\n",
		exec + "7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 " + long + "x.so\n",
		exec + "7f0000000000-7f0000001000 r-xp 00000000 fd:01\n7f0000001000-7f0000002000 r-xp\n",
		exec + "ffffffffffffffff-0 r-xp ffffffffffffffff fd:01 7 /lib/x.so\n",
		exec + "10000000000000000-1 r-xp 0 0 0 /lib/x.so\n",
		strings.Repeat("7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /lib/many.so\n", 100),
	}
}

// TestGenerateFuzzSeeds writes unwind-fuzz.elf and the seed corpora of
// FuzzUnwind and FuzzParseMaps. It runs only when asked:
//
//	NGXPROBE_FUZZ_SEEDS=1 go test ./stacks -run TestGenerateFuzzSeeds
func TestGenerateFuzzSeeds(t *testing.T) {
	if os.Getenv("NGXPROBE_FUZZ_SEEDS") == "" {
		t.Skip("writes testdata/fuzz; set NGXPROBE_FUZZ_SEEDS=1 to run it")
	}
	src, err := filepath.Abs("testdata/deep.c")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables", "-no-pie",
		"-fdebug-prefix-map=" + filepath.Dir(src) + "=/src", "-Wl,-z,noseparate-code", "-o", unwindFuzzELF, src}
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := os.Chmod(unwindFuzzELF, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(unwindFuzzELF)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string][]byte{}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".eh_frame", ".debug_frame"} {
		if sections[name], err = ef.Section(name).Data(); err != nil {
			t.Fatal(err)
		}
	}
	var targetAddr uint64
	syms, _ := ef.Symbols()
	for _, s := range syms {
		if s.Name == "target" {
			targetAddr = s.Value
		}
	}
	ef.Close()

	var unwind []seedFile
	add := func(name string, stack []byte, regs map[uint64]uint64) {
		unwind = append(unwind, seedFile{name, []any{sections[".eh_frame"], sections[".debug_frame"], stack,
			regs[stacks.RegRA], regs[symbols.RegRSP], regs[symbols.RegRBP], regs[symbols.RegRBX]}})
	}
	var maps []string
	for _, c := range []struct {
		name  string
		depth string
		bytes int
	}{{"capture-depth2", "2", 8192}, {"capture-depth0-cut", "0", 512}} {
		atTarget(t, bin, c.bytes, func(tr tracee) {
			add(c.name, tr.capture.Stack, tr.capture.Regs)
			if c.depth == "2" {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", tr.pid))
				if err != nil {
					t.Fatal(err)
				}
				maps = append(maps, string(b))
				// A cycle: every slot a return address into target.
				loop := append([]byte(nil), tr.capture.Stack...)
				for i := 0; i+8 <= len(loop); i += 8 {
					binary.LittleEndian.PutUint64(loop[i:], targetAddr+1)
				}
				add("cycle", loop, tr.capture.Regs)
				// Pointers into nowhere, and a frame pointer at the top of
				// the address space.
				regs := map[uint64]uint64{stacks.RegRA: targetAddr, symbols.RegRSP: ^uint64(0) - 15, symbols.RegRBP: ^uint64(0) - 7}
				add("top-of-address-space", tr.capture.Stack[:64], regs)
			}
		}, c.depth, "20")
	}
	own, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	maps = append(maps, string(own))
	var mapsSeeds []seedFile
	for i, m := range append(maps, hostileMaps(maps[0])...) {
		mapsSeeds = append(mapsSeeds, seedFile{fmt.Sprintf("maps-%d", i), []any{m}})
	}
	writeSeeds(t, "FuzzUnwind", unwind)
	writeSeeds(t, "FuzzParseMaps", mapsSeeds)
}

// seedFile is one file of a seed corpus: its name and the fuzz arguments.
type seedFile struct {
	name string
	args []any
}

// writeSeeds replaces testdata/fuzz/NAME with the files, in go test's
// corpus format.
func writeSeeds(t *testing.T, fuzzer string, files []seedFile) {
	dir := filepath.Join("testdata", "fuzz", fuzzer)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sf := range files {
		text := "go test fuzz v1\n"
		for _, a := range sf.args {
			switch v := a.(type) {
			case []byte:
				text += fmt.Sprintf("[]byte(%q)\n", v)
			case string:
				text += fmt.Sprintf("string(%q)\n", v)
			case uint64:
				text += fmt.Sprintf("uint64(%d)\n", v)
			default:
				t.Fatalf("seed argument of type %T", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, sf.name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
