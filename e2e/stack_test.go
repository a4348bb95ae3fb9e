package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

const gdbTimeout = 30 * time.Second // gdb attach, breakpoint, backtrace, detach

// stackProbes are the probe points whose stacks are compared with gdb's:
// ngx_http_finalize_request, deep in the request phases; ngx_unix_recv,
// straight from the event loop; ngx_http_write_filter and ngx_writev,
// below the output filters, where (in the lto build) callers have
// inlined frames: ngx_http_output_filter, ngx_http_send_response.
var stackProbes = []string{"ngx_http_finalize_request", "ngx_unix_recv", "ngx_http_write_filter", "ngx_writev"}

// jsonStack is the "stack" of a JSON event.
type jsonStack struct {
	Frames []struct {
		Module  string `json:"module"`
		Address uint64 `json:"address"`
		Symbol  string `json:"symbol"`
		Offset  uint64 `json:"offset"`
		File    string `json:"file"`
		Line    int    `json:"line"`
		Inlined bool   `json:"inlined"`
		Lua     *struct {
			Kind      string `json:"kind"`
			Source    string `json:"source"`
			Line      int    `json:"line"`
			FirstLine int    `json:"first_line"`
			Text      string `json:"text"`
		} `json:"lua"`
	} `json:"frames"`
	Truncated bool     `json:"truncated"`
	Reason    string   `json:"reason"`
	Notes     []string `json:"notes"`
}

type stackEvent struct {
	PID      int        `json:"pid"`
	Function string     `json:"function"`
	Stack    *jsonStack `json:"stack"`
}

// gdbFrame is one frame of gdb's backtrace.
type gdbFrame struct {
	Type   int    // gdb.NORMAL_FRAME 0, INLINE_FRAME 2, TAILCALL_FRAME 3, ...
	PC     uint64 // for the log
	Name   string // "??" when gdb has no name
	Module string // the file of the pc's objfile
	File   string // source file, "" when gdb has none
	Line   int
}

// gdb frame types (gdb.NORMAL_FRAME etc. of gdb's Python API).
const (
	gdbNormalFrame   = 0
	gdbInlineFrame   = 2
	gdbTailcallFrame = 3
)

// gdbFramesPy defines the gdb command ngx-frames: one line per frame,
// innermost first: "NGXFRAME type pc module name file:line" ("-" for no
// line).
const gdbFramesPy = `
import gdb, os

class NgxFrames(gdb.Command):
    def __init__(self):
        super().__init__("ngx-frames", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        f = gdb.newest_frame()
        n = 0
        while f is not None and n < 256:
            pc = f.pc()
            mod = gdb.current_progspace().solib_name(pc) or gdb.current_progspace().filename or "?"
            sal = f.find_sal()
            src = "-"
            if sal.symtab is not None and sal.line > 0:
                src = "%s:%d" % (sal.symtab.filename, sal.line)
            print("NGXFRAME %d %#x %s %s %s" % (f.type(), pc, os.path.basename(mod), f.name() or "??", src))
            f = f.older()
            n += 1
        print("NGXFRAMES END")

NgxFrames()
`

var gdbFrameLine = regexp.MustCompile(`(?m)^NGXFRAME (\d+) 0x([0-9a-f]+) (\S+) (\S+) (\S+)$`)

// TestStacksMatchGDB compares ngxprobe's stacks with gdb's backtraces of
// the same nginx worker at the same probe points, frame by frame from
// the probed function through main and libc's start code to _start:
// same functions, same modules, same inlined frames. gdb unwinds with
// its own reader of the same CFI, and names frames from DWARF.
func TestStacksMatchGDB(t *testing.T) {
	nginxtest.RequireRoot(t)
	if _, err := exec.LookPath("gdb"); err != nil {
		testenv.SkipOrFail(t, "gdb not found (internal/nginxtest/setup-deps.sh installs it)")
	}
	for _, v := range variants {
		t.Run(v, func(t *testing.T) { testStacksMatchGDB(t, v) })
	}
}

func testStacksMatchGDB(t *testing.T, variant string) {
	inst := privateBinary(t, nginxtest.Build(t, variant))
	s, base := startPlain(t, inst, 1, "")
	workers := s.WorkerPIDs()
	if len(workers) != 1 {
		t.Fatalf("want 1 worker, have %v", workers)
	}
	worker := workers[0]

	// ngxprobe first: one request, a stack at each probe.
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json",
		"--probe", "ngx_http_finalize_request:rc,stack",
		"--probe", "ngx_unix_recv:size,stack",
		"--probe", "ngx_http_write_filter:stack",
		"--probe", "ngx_writev:stack")
	if code, body := httpGet(t, base+"/"); code != 200 || body != "ok\n" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	got := map[string]stackEvent{}
	deadline := time.Now().Add(eventTimeout)
	for len(got) < len(stackProbes) && time.Now().Before(deadline) && !p.exited() {
		time.Sleep(50 * time.Millisecond)
		for _, ev := range stackEvents(t, p) {
			if _, seen := got[ev.Function]; !seen && ev.Stack != nil {
				got[ev.Function] = ev // the first: the request's first recv
			}
		}
	}
	stopProbeOK(t, p)
	for _, fn := range stackProbes {
		if _, ok := got[fn]; !ok {
			t.Fatalf("no event with a stack for %s: %s", fn, p)
		}
	}

	modules := modulePaths(t, worker)
	for _, fn := range stackProbes {
		t.Run(fn, func(t *testing.T) {
			ev := got[fn]
			if ev.PID != worker {
				t.Errorf("event of pid %d, want the worker %d", ev.PID, worker)
			}
			if ev.Stack.Truncated {
				t.Errorf("ngxprobe's stack is truncated: %s", ev.Stack.Reason)
			}
			if len(ev.Stack.Notes) > 0 {
				t.Errorf("ngxprobe's stack has notes %q, want none", ev.Stack.Notes)
			}
			want := gdbBacktrace(t, worker, fn, base)
			compareWithGDB(t, ev.Stack, want, modules)
		})
	}
	checkServes(t, base)
}

// privateBinary runs nginx from a copy of the binary, a file of its own.
// gdb's breakpoint is an int3 it writes into the worker's code; uprobes
// are per file, and when any tracer (another test binary, another
// ngxprobe) detaches a uprobe at the same function of the same file, the
// kernel writes the original instruction back into every process mapping
// that file in which no tracer still wants it: over gdb's int3, which is
// then gone, and gdb waits forever.
func privateBinary(t *testing.T, inst nginxtest.Install) nginxtest.Install {
	t.Helper()
	data, err := os.ReadFile(inst.Binary)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	inst.Binary = filepath.Join(dir, "nginx")
	if err := os.WriteFile(inst.Binary, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return inst
}

// stackEvents parses the complete JSON lines ngxprobe printed so far.
func stackEvents(t testing.TB, p *proc) []stackEvent { return jsonLines[stackEvent](t, p) }

// gdbBacktrace attaches gdb to the worker, stops it at the first
// instruction of fn while a client sends a request, and returns the
// backtrace. The breakpoint is "break *fn": the address where the uprobe
// is, not the end of the prologue, and only the out-of-line copy of fn
// (plain "break fn" would also stop in copies inlined into callers, which
// the probe never sees).
func gdbBacktrace(t *testing.T, worker int, fn, base string) []gdbFrame {
	t.Helper()
	return gdbBacktraceAt(t, gdbRun{worker: worker, fn: fn, trigger: func() error {
		client := &http.Client{Timeout: gdbTimeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
		defer client.CloseIdleConnections()
		resp, err := client.Get(base + "/gdb")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}})
}

// gdbRun is a breakpoint for gdbBacktraceAt: where, and what makes the
// worker get there.
type gdbRun struct {
	worker int
	// fn is the function to break at, as gdb names it; module-qualified
	// names are not gdb's: give the plain name.
	fn      string
	trigger func() error
	// debuginfod (DEBUGINFOD_URLS=URL) lets gdb fetch debug info, as
	// ngxprobe does; "" keeps it off.
	debuginfod string
	env        []string
}

// gdbBacktraceAt attaches gdb to the worker, stops it at the first
// instruction of r.fn while r.trigger runs, and returns the backtrace.
func gdbBacktraceAt(t *testing.T, r gdbRun) []gdbFrame {
	t.Helper()
	script := filepath.Join(t.TempDir(), "frames.py")
	if err := os.WriteFile(script, []byte(gdbFramesPy), 0o644); err != nil {
		t.Fatal(err)
	}
	debuginfod := "off"
	g := &proc{env: r.env}
	if r.debuginfod != "" {
		debuginfod = "on"
		g.env = append(g.env, "DEBUGINFOD_URLS="+r.debuginfod)
	}
	launchTo(t, g, &g.stdout, "gdb", "-batch", "-nx",
		"-iex", "set debuginfod enabled "+debuginfod,
		"-iex", "set pagination off",
		"-x", script,
		"-p", strconv.Itoa(r.worker),
		"-ex", "set backtrace past-main on",
		"-ex", "set backtrace past-entry on",
		"-ex", "break *"+r.fn,
		"-ex", "continue",
		"-ex", "ngx-frames",
		"-ex", "bt",
		"-ex", "detach",
		"-ex", "quit")

	// The trigger runs once the breakpoint is in; the worker is stopped
	// until gdb detaches, so the client waits, bounded.
	deadline := time.Now().Add(gdbTimeout)
	for !strings.Contains(g.stdout.String()+g.stderr.String(), "Breakpoint 1 at") {
		if g.exited() || time.Now().After(deadline) {
			_ = syscall.Kill(-g.pid(), syscall.SIGKILL)
			t.Fatalf("gdb did not set the breakpoint on %s: %s", r.fn, g)
		}
		time.Sleep(20 * time.Millisecond)
	}
	clientErr := make(chan error, 1)
	go func() { clientErr <- r.trigger() }()
	if code := g.wait(t, gdbTimeout); code != 0 {
		t.Errorf("gdb exited with %d: %s", code, g)
	}
	select {
	case err := <-clientErr:
		if err != nil {
			t.Errorf("client during gdb's breakpoint: %v", err)
		}
	case <-time.After(gdbTimeout):
		t.Errorf("the client during gdb's breakpoint did not finish within %v", gdbTimeout)
	}
	out := g.stdout.String()
	if !strings.Contains(out, "NGXFRAMES END") {
		t.Fatalf("gdb printed no backtrace: %s", g)
	}
	var frames []gdbFrame
	for _, m := range gdbFrameLine.FindAllStringSubmatch(out, -1) {
		typ, _ := strconv.Atoi(m[1])
		pc, _ := strconv.ParseUint(m[2], 16, 64)
		g := gdbFrame{Type: typ, PC: pc, Module: m[3], Name: m[4]}
		if file, line, ok := strings.Cut(m[5], ":"); ok {
			g.File = file
			g.Line, _ = strconv.Atoi(line)
		}
		frames = append(frames, g)
	}
	if len(frames) == 0 || normalizeSymbol(frames[0].Name) != r.fn {
		t.Fatalf("gdb's backtrace does not start in %s: %s", r.fn, g)
	}
	t.Logf("gdb's backtrace at %s:\n%s", r.fn, backtraceLines(out))
	return frames
}

// backtraceLines is the "bt" output of gdb, for the log.
func backtraceLines(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") {
			b.WriteString("  " + line + "\n")
		}
	}
	return b.String()
}

// symbolSuffix matches what compilers append to the ELF names of local
// clones and parts of functions (gdb names them by their DWARF name).
var symbolSuffix = regexp.MustCompile(`(\.(lto_priv|isra|constprop|part|cold|localalias)(\.\d+)?)+$`)

// normalizeSymbol makes ngxprobe's ELF-based and gdb's DWARF-based names
// comparable: no symbol version, no clone suffix, "" for unknown.
func normalizeSymbol(s string) string {
	if i := strings.IndexByte(s, '@'); i > 0 {
		s = s[:i]
	}
	s = symbolSuffix.ReplaceAllString(s, "")
	if s == "??" {
		s = ""
	}
	return s
}

// modulePaths maps the base names of the worker's file mappings to their
// paths.
func modulePaths(t *testing.T, pid int) map[string]string {
	t.Helper()
	maps, err := stacks.ReadMaps("", pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range maps {
		if m.Exec && strings.HasPrefix(m.Path, "/") {
			out[filepath.Base(m.Path)] = m.Path
		}
	}
	return out
}

// aliases reports whether a and b are function symbols at the same
// address of the module: two names of one function. glibc's
// __libc_start_main is __libc_start_main_impl in its DWARF (gdb's name);
// ngxprobe names frames by ELF symbol, preferring the exported name.
func aliases(t *testing.T, modulePath, a, b string) bool {
	t.Helper()
	if modulePath == "" || a == "" || b == "" {
		return false
	}
	bin, err := symbols.Open(modulePath, nil)
	if err != nil {
		t.Logf("aliases: %v", err)
		return false
	}
	defer bin.Close()
	addrs := map[string]map[uint64]bool{}
	for _, s := range bin.FunctionSymbols() {
		n := normalizeSymbol(s.Name)
		if n != a && n != b {
			continue
		}
		if addrs[n] == nil {
			addrs[n] = map[uint64]bool{}
		}
		addrs[n][s.Value] = true
	}
	for addr := range addrs[a] {
		if addrs[b][addr] {
			return true
		}
	}
	return false
}

// compareWithGDB checks ngxprobe's frames against gdb's, one for one:
// the same function (names normalized, or two names of one address), the
// same module, and inlined exactly where gdb has an inline frame.
//
// The one difference allowed is a frame gdb marks TAILCALL_FRAME: gdb
// makes those up from DW_TAG_call_site entries for a function that
// tail-called (jumped to) the next one, so it is on no stack, and no
// unwinder working from the stack and CFI can see it. Such frames are
// skipped, and logged; every other frame must match.
func compareWithGDB(t *testing.T, st *jsonStack, want []gdbFrame, modules map[string]string) {
	t.Helper()
	var b strings.Builder
	for i, f := range st.Frames {
		inl := ""
		if f.Inlined {
			inl = " [inlined]"
		}
		fmt.Fprintf(&b, "  #%-3d %s+%#x (%s %#x) %s:%d%s\n", i, f.Symbol, f.Offset, f.Module, f.Address, f.File, f.Line, inl)
	}
	t.Logf("ngxprobe's stack:\n%s", b.String())

	i := 0 // ngxprobe's frame
	for j, g := range want {
		if g.Type == gdbTailcallFrame {
			t.Logf("gdb frame #%d %s is a tail-call frame gdb recovered from call-site info; not on the stack, so not in ngxprobe's", j, g.Name)
			continue
		}
		if g.Type != gdbNormalFrame && g.Type != gdbInlineFrame {
			t.Errorf("gdb frame #%d %s has frame type %d, which this test does not expect (signal or dummy frame?)", j, g.Name, g.Type)
		}
		if i >= len(st.Frames) {
			t.Errorf("ngxprobe's stack ends after %d frames; gdb has more, from #%d %s in %s", len(st.Frames), j, g.Name, g.Module)
			return
		}
		f := st.Frames[i]
		i++
		gname, fname := normalizeSymbol(g.Name), normalizeSymbol(f.Symbol)
		sameName := gname == fname || aliases(t, modules[f.Module], gname, fname)
		// gdb names a library by the path it was loaded as, often its
		// soname (libluajit-5.1.so.2); ngxprobe by the file mapped
		// (libluajit-5.1.so.2.1.0).
		sameModule := f.Module == g.Module || strings.HasPrefix(f.Module, g.Module+".") || strings.HasPrefix(g.Module, f.Module+".")
		if !sameName || !sameModule || f.Inlined != (g.Type == gdbInlineFrame) {
			t.Errorf("frame %d: ngxprobe has %q in %s (inlined %v), gdb #%d has %q in %s (inlined %v)",
				i-1, f.Symbol, f.Module, f.Inlined, j, g.Name, g.Module, g.Type == gdbInlineFrame)
			continue
		}
		// The source position of callers: the call site (gdb, like
		// ngxprobe, looks up the instruction before the return address;
		// an inlined frame's is its DW_AT_call_line). Not for the probed
		// frame: at a function's entry the line table has several rows at
		// the same address (the opening line, the first statement, ...);
		// gdb takes the last one marked is_stmt, ngxprobe the last one,
		// as addr2line does. Both are right; they differ.
		if i-1 > 0 && (f.Line != g.Line || filepath.Base(f.File) != filepath.Base(g.File)) {
			t.Errorf("frame %d %s: ngxprobe says %s:%d, gdb #%d says %s:%d", i-1, f.Symbol, f.File, f.Line, j, g.File, g.Line)
		}
		if gname != fname {
			t.Logf("frame %d: %q and gdb's %q are two names of one function", i-1, f.Symbol, g.Name)
		}
	}
	for ; i < len(st.Frames); i++ {
		t.Errorf("ngxprobe has frame %d %q in %s past the end of gdb's backtrace", i, st.Frames[i].Symbol, st.Frames[i].Module)
	}
	// The walk must really go through main into libc's start code, or the
	// comparison proves little.
	var sawMain, sawLibc bool
	for _, f := range st.Frames {
		sawMain = sawMain || f.Symbol == "main"
		sawLibc = sawLibc || (sawMain && strings.HasPrefix(f.Module, "libc.so"))
	}
	if !sawMain || !sawLibc {
		t.Errorf("the stack does not reach main and then libc (main %v, libc %v)", sawMain, sawLibc)
	}
}
