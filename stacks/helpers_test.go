package stacks_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

const (
	buildTimeout = 2 * time.Minute
	stopTimeout  = 10 * time.Second
	// trapTimeout bounds the wait for the fixture to reach target; it
	// calls it every ~10 ms.
	trapTimeout = 10 * time.Second
)

// workDir holds what the tests build once per run: fixture variants and
// the ngxprobe binary. TestMain removes it.
var workDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ngxprobe-stacks-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "stacks: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Readable for everyone, so the fixtures can also run unprivileged.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "stacks: %v\n", err)
		return 1
	}
	workDir = dir
	return m.Run()
}

// Fixture variants of testdata/deep.c: gcc flags, and sections objcopy
// removes afterwards.
type variant struct {
	cflags []string
	strip  []string
}

var variants = map[string]variant{
	// Like the nginx builds: CFI in .eh_frame, no frame pointers.
	"deep": {cflags: []string{"-O2", "-g", "-fomit-frame-pointer"}},
	// CFI for the fixture's own code only in .debug_frame (gcc emits it
	// there with -g when asynchronous unwind tables are off); .eh_frame
	// still covers _start and the PLT from crt1.o.
	"deep-debugframe": {cflags: []string{"-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables"}},
	// Another build of the same source, with another build-id.
	"deep-other": {cflags: []string{"-O1", "-g", "-fomit-frame-pointer"}},
	// No CFI at all, with frame pointers.
	"deep-nocfi-fp": {
		cflags: []string{"-O2", "-g", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"},
		strip:  []string{".eh_frame", ".eh_frame_hdr", ".debug_frame"},
	},
	// No CFI and no frame pointers: nothing to unwind with.
	"deep-nocfi": {
		cflags: []string{"-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"},
		strip:  []string{".eh_frame", ".eh_frame_hdr", ".debug_frame"},
	},
}

type built struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*built{}
)

// fixture builds (once per test binary) the variant of testdata/deep.c
// and returns its path; without gcc or objcopy it skips (fails in CI).
func fixture(t testing.TB, name string) string {
	t.Helper()
	v, ok := variants[name]
	if !ok {
		t.Fatalf("unknown fixture variant %q", name)
	}
	buildsMu.Lock()
	b, ok := builds[name]
	if !ok {
		b = &built{}
		builds[name] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() { b.path, b.err = buildFixture(name, v) })
	if errors.Is(b.err, exec.ErrNotFound) {
		testenv.SkipOrFail(t, "building the fixture: %v", b.err)
	}
	if b.err != nil {
		t.Fatalf("building fixture %s: %v", name, b.err)
	}
	return b.path
}

func buildFixture(name string, v variant) (string, error) {
	src, err := filepath.Abs(filepath.Join("testdata", "deep.c"))
	if err != nil {
		return "", err
	}
	out := filepath.Join(workDir, name)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := append(append([]string{}, v.cflags...), "-o", out, src)
	if msg, err := exec.CommandContext(ctx, "gcc", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	if len(v.strip) > 0 {
		var args []string
		for _, s := range v.strip {
			args = append(args, "--remove-section", s)
		}
		args = append(args, out)
		if msg, err := exec.CommandContext(ctx, "objcopy", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("objcopy %s: %w\n%s", strings.Join(args, " "), err, msg)
		}
	}
	return out, os.Chmod(out, 0o755)
}

// copyFile copies src to a new file dst with mode 0755.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// fixtureFuncs are the functions of deep.c, innermost first, as a stack
// taken in target names them.
var fixtureFuncs = []string{"target", "inlined_step", "leaf", "recurse", "f12", "f11", "f10", "f9", "f8", "f7", "f6", "f5", "f4", "f3", "f2", "f1", "main"}

// wantFixture is the stack a capture in target holds when the fixture
// runs with recursion depth: every frame down to main, with whether it
// is inlined.
type wantFrame struct {
	symbol  string
	inlined bool
}

func wantFixture(depth int) []wantFrame {
	w := []wantFrame{{"target", false}, {"inlined_step", true}, {"leaf", false}}
	for range depth + 1 {
		w = append(w, wantFrame{"recurse", false})
	}
	for i := 12; i >= 1; i-- {
		w = append(w, wantFrame{fmt.Sprintf("f%d", i), false})
	}
	return append(w, wantFrame{"main", false})
}

// libcStart returns the names the unwinder gives the libc frames between
// main and _start: glibc 2.34 and later call main from
// __libc_start_call_main, called by __libc_start_main. The first is a
// local symbol, only named when libc's debug info (libc6-dbg) is
// installed: without it the frame has no name (gdb prints "??").
func libcStart(t testing.TB, pid int) []string {
	t.Helper()
	maps, err := stacks.ReadMaps("", pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.Exec && strings.HasPrefix(filepath.Base(m.Path), "libc.so") {
			b, err := symbols.Open(strings.TrimSuffix(m.Path, " (deleted)"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, s := range b.FunctionSymbols() {
				if s.Name == "__libc_start_call_main" {
					return []string{"__libc_start_call_main", "__libc_start_main"}
				}
			}
			t.Logf("libc has no symbol __libc_start_call_main (libc6-dbg not installed?): expecting an unnamed frame")
			return []string{"", "__libc_start_main"}
		}
	}
	t.Fatalf("pid %d maps no libc", pid)
	return nil
}

// checkFullStack asserts the exact stack of target in a fixture run with
// depth: the fixture's frames, libc's start code, and _start.
func checkFullStack(t testing.TB, st stacks.Stack, fixtureName string, depth int, libc []string) {
	t.Helper()
	if st.Truncated {
		t.Errorf("stack is truncated: %s", st.Reason)
	}
	want := wantFixture(depth)
	type row struct {
		symbol, module string
		inlined        bool
	}
	var wantRows []row
	for _, w := range want {
		wantRows = append(wantRows, row{w.symbol, fixtureName, w.inlined})
	}
	for _, name := range libc {
		wantRows = append(wantRows, row{name, "libc.so.6", false})
	}
	wantRows = append(wantRows, row{"_start", fixtureName, false})
	var got []row
	for _, f := range st.Frames {
		got = append(got, row{f.Symbol, f.Module, f.Inlined})
	}
	if fmt.Sprint(got) != fmt.Sprint(wantRows) {
		t.Errorf("stack of target:\n got %v\nwant %v\n%s", got, wantRows, formatStack(st))
	}
	// Inlined frames share the pc of the frame that contains them; every
	// frame of the fixture has a source line.
	for i, f := range st.Frames {
		if f.Module == fixtureName && f.Symbol != "_start" && (f.File == "" || f.Line == 0) {
			t.Errorf("frame %d (%s) has no source line: %+v", i, f.Symbol, f)
		}
		if f.Inlined && (i+1 >= len(st.Frames) || st.Frames[i+1].Address != f.Address) {
			t.Errorf("inlined frame %d (%s) is not followed by the frame at its address", i, f.Symbol)
		}
	}
}

// checkPrefix asserts that every frame is the one the real stack holds
// at that depth (of a fixture run with depth), that is no frame was
// invented, and returns how many frames there are. Past main only libc
// frames and a last _start may follow.
func checkPrefix(t testing.TB, st stacks.Stack, fixtureName string, depth int) int {
	t.Helper()
	want := wantFixture(depth)
	for i, f := range st.Frames {
		if i >= len(want) {
			// Past main: libc's start code, then _start, the last frame.
			last := f.Module == fixtureName && f.Symbol == "_start" && i == len(st.Frames)-1
			if !last && !strings.HasPrefix(f.Module, "libc.so") {
				t.Errorf("frame %d (%s in %s) is past main but neither libc nor _start\n%s", i, f.Symbol, f.Module, formatStack(st))
				break
			}
			continue
		}
		if f.Module != fixtureName || f.Symbol != want[i].symbol || f.Inlined != want[i].inlined {
			t.Errorf("frame %d is %s (module %s, inlined %v), want %s (inlined %v): an invented frame\n%s",
				i, f.Symbol, f.Module, f.Inlined, want[i].symbol, want[i].inlined, formatStack(st))
			break
		}
	}
	return len(st.Frames)
}

func formatStack(st stacks.Stack) string {
	var b strings.Builder
	for i, f := range st.Frames {
		inl := ""
		if f.Inlined {
			inl = " [inlined]"
		}
		fmt.Fprintf(&b, "  #%-3d %s+%#x (%s %#x) %s:%d%s\n", i, f.Symbol, f.Offset, f.Module, f.Address, f.File, f.Line, inl)
	}
	fmt.Fprintf(&b, "  truncated=%v reason=%q notes=%q\n", st.Truncated, st.Reason, st.Notes)
	return b.String()
}

// tracee is a fixture stopped by ptrace at the first instruction of
// target, the way a uprobe there sees it.
type tracee struct {
	pid     int
	capture stacks.Capture
}

// atTarget runs bin (args ...) under ptrace, stops it at the entry of
// target with a breakpoint, and calls fn with the registers and a copy of
// up to stackBytes of stack from rsp, read in 512-byte chunks like the
// probe's. The process stays stopped while fn runs and is killed and
// reaped afterwards, whatever fn does. ptrace needs no privilege for a
// child that asks to be traced.
func atTarget(t *testing.T, bin string, stackBytes int, fn func(tr tracee), args ...string) {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("ptrace capture is for linux/amd64, have %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	// Every ptrace request, and wait4 for the tracee, must come from the
	// thread that started it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = stdinR // an *os.File: no copying goroutine
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		stdinR.Close()
		testenv.SkipOrFail(t, "starting %s under ptrace: %v", bin, err)
	}
	stdinR.Close()
	pid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if _, err := wait(pid, stopTimeout, true); err != nil {
			t.Errorf("reaping fixture %d: %v", pid, err)
		}
		_ = cmd.Process.Release() // reaped above, not through cmd.Wait
	}()

	// The exec stop: the binary and ld.so are mapped.
	if ws, err := wait(pid, trapTimeout, false); err != nil || !ws.Stopped() {
		t.Fatalf("fixture %d did not stop at exec: %v (status %#x)", pid, err, ws)
	}
	addr := runtimeAddr(t, pid, bin, "target")
	var orig [8]byte
	if _, err := syscall.PtracePeekText(pid, uintptr(addr), orig[:]); err != nil {
		t.Fatalf("peek %#x: %v", addr, err)
	}
	trap := orig
	trap[0] = 0xcc // int3
	if _, err := syscall.PtracePokeText(pid, uintptr(addr), trap[:]); err != nil {
		t.Fatalf("poke %#x: %v", addr, err)
	}
	if err := syscall.PtraceCont(pid, 0); err != nil {
		t.Fatalf("cont: %v", err)
	}
	ws, err := wait(pid, trapTimeout, false)
	if err != nil || !ws.Stopped() || ws.StopSignal() != syscall.SIGTRAP {
		t.Fatalf("fixture %d did not reach target: %v (status %#x)\n%s", pid, err, ws, stderr.String())
	}
	var regs syscall.PtraceRegs
	if err := syscall.PtraceGetRegs(pid, &regs); err != nil {
		t.Fatalf("getregs: %v", err)
	}
	if regs.Rip != addr+1 {
		t.Fatalf("stopped at %#x, want just past the breakpoint at %#x", regs.Rip, addr)
	}
	// Put the instruction back and rewind to the entry, as if nothing
	// had happened.
	regs.Rip = addr
	if _, err := syscall.PtracePokeText(pid, uintptr(addr), orig[:]); err != nil {
		t.Fatalf("poke: %v", err)
	}
	if err := syscall.PtraceSetRegs(pid, &regs); err != nil {
		t.Fatalf("setregs: %v", err)
	}
	c := stacks.Capture{
		PID: pid,
		Regs: map[uint64]uint64{
			symbols.RegRBX: regs.Rbx, symbols.RegRBP: regs.Rbp, symbols.RegRSP: regs.Rsp,
			symbols.RegR12: regs.R12, symbols.RegR13: regs.R13, symbols.RegR14: regs.R14, symbols.RegR15: regs.R15,
			stacks.RegRA: regs.Rip,
		},
		Requested: stackBytes,
		Stack:     readStack(t, pid, regs.Rsp, stackBytes),
	}
	fn(tracee{pid: pid, capture: c})
}

// readStack copies up to n bytes from sp in 512-byte chunks, stopping at
// the first chunk that can't be read (the top of the stack), like the
// probe.
func readStack(t testing.TB, pid int, sp uint64, n int) []byte {
	t.Helper()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var out []byte
	chunk := make([]byte, 512)
	for len(out)+len(chunk) <= n {
		if k, err := mem.ReadAt(chunk, int64(sp)+int64(len(out))); err != nil || k != len(chunk) {
			break
		}
		out = append(out, chunk...)
	}
	return out
}

// wait waits (bounded) for a state change of pid; with untilExit it
// waits for its exit, skipping stops.
func wait(pid int, timeout time.Duration, untilExit bool) (syscall.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG|syscall.WALL, nil)
		if err != nil {
			return ws, err
		}
		if got == pid && (!untilExit || ws.Exited() || ws.Signaled()) {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("no state change of %d within %v", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runtimeAddr is where function name of bin is mapped in pid.
func runtimeAddr(t testing.TB, pid int, bin, name string) uint64 {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var vaddr uint64
	for _, s := range syms {
		if s.Name == name && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			vaddr = s.Value
		}
	}
	if vaddr == 0 {
		t.Fatalf("%s has no function %s", bin, name)
	}
	var off uint64
	found := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			off, found = vaddr-p.Vaddr+p.Off, true
		}
	}
	if !found {
		t.Fatalf("%s: %s at %#x is in no segment", bin, name, vaddr)
	}
	maps, err := stacks.ReadMaps("", pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if m.Path == bin && off >= m.Offset && off < m.Offset+(m.End-m.Start) {
			return m.Start + off - m.Offset
		}
	}
	t.Fatalf("pid %d does not map %s at file offset %#x", pid, bin, off)
	return 0
}
