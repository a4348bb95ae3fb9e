package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// OpenResty: lua-nginx-module 0.10.23 and OpenResty's LuaJIT, as Debian
// packages them (nginxtest.BuildOpenResty), with the Lua code of a
// gateway plugin that closes connections. Ground truth for the Lua
// frames is Lua's own debug.traceback(), logged by the Lua code on the
// very line that calls the probed function; for the C frames, gdb.

// luaAuth is a plugin module: a close decided two calls down, and a
// deep recursion for the walk's bound.
const luaAuth = `local _M = {}

local function reject(id)
    ngx.log(ngx.ERR, "TB ", id, " ", debug.traceback()) ngx.exit(444)
end

function _M.check(id, n)
    if n > 0 then
        reject(id)
    end
    return true
end

function _M.deep(id, n)
    if n == 0 then
        reject(id)
        return
    end
    _M.deep(id, n - 1)
    return
end

return _M
`

// luaLocations: each logs its traceback with the request's id, then
// makes nginx close or refuse; /jit runs often enough to be compiled.
const luaLocations = `
        location = /file {
            access_by_lua_block { require("auth").check(ngx.var.arg_id, 1) }
        }
        location = /inline {
            access_by_lua_block {
                local function deny(id) ngx.log(ngx.ERR, "TB ", id, " ", debug.traceback()) ngx.exit(403) end
                local function vararg(...) deny(...) end
                vararg(ngx.var.arg_id)
            }
        }
        location = /pcall {
            access_by_lua_block {
                local ok = pcall(function(id) ngx.log(ngx.ERR, "TB ", id, " ", debug.traceback()) ngx.exit(444) end, ngx.var.arg_id)
            }
        }
        location = /deep {
            access_by_lua_block { require("auth").deep(ngx.var.arg_id, 30) }
        }
        location = /jit {
            access_by_lua_block {
                local function deny(n) if n > 0 then ngx.exit(444) end end
                local function wrap(n) deny(n) end
                wrap(1)
            }
        }
        location = /plain {
            return 200 "plain\n";
        }
        location = /flush {
            content_by_lua_block { jit.flush() ngx.say("flushed") }
        }`

// luaServer starts the packaged nginx with lua-nginx-module and the
// locations above; the error log holds the tracebacks.
func luaServer(t *testing.T) (*nginxtest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.lua"), []byte(luaAuth), 0o644); err != nil {
		t.Fatal(err)
	}
	port := nginxtest.FreePort(t)
	srv := nginxtest.StartPackaged(t, nginxtest.LuaConfig(nginxtest.Config{HTTP: fmt.Sprintf(`
    init_by_lua_block { package.path = %q .. package.path }
    server {
        listen 127.0.0.1:%d;
%s
    }`, dir+"/?.lua;", port, luaLocations)}))
	return srv, fmt.Sprintf("127.0.0.1:%d", port)
}

// traceback returns the frames of the debug.traceback() logged as "TB
// id", one line each as it prints them, or nil when it is not (yet) in
// the log. A traceback of more than 22 levels has a "..." line.
func traceback(errorLog, id string) []string {
	_, after, ok := strings.Cut(errorLog, "TB "+id+" stack traceback:\n")
	if !ok {
		return nil
	}
	var out []string
	for _, line := range strings.Split(after, "\n") {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		line, last := strings.CutSuffix(line, ", client: 127.0.0.1")
		if i := strings.Index(line, ", client: "); i >= 0 {
			line, last = line[:i], true
		}
		out = append(out, strings.TrimPrefix(line, "\t"))
		if last {
			break
		}
	}
	return out
}

// luaTexts lists the Lua frames of a stack, innermost first, as
// ngxprobe prints them.
func luaTexts(st *jsonStack) []string {
	var out []string
	for _, f := range st.Frames {
		if f.Lua != nil {
			out = append(out, f.Lua.Text)
		}
	}
	return out
}

// cFrames is the stack without its Lua frames.
func cFrames(st *jsonStack) *jsonStack {
	out := *st
	out.Frames = nil
	for _, f := range st.Frames {
		if f.Lua == nil {
			out.Frames = append(out.Frames, f)
		}
	}
	return &out
}

// exitEvents are the events of the probe on ngx_http_lua_ffi_exit.
func exitEvents(t testing.TB, p *proc) []stackEvent {
	var out []stackEvent
	for _, ev := range stackEvents(t, p) {
		if ev.Function == "ngx_http_lua_ffi_exit" {
			out = append(out, ev)
		}
	}
	return out
}

// The frames above the Lua code that called ngx.exit: resty.core's
// ngx.exit, and the FFI call into ngx_http_lua_ffi_exit (a builtin).
var exitFrames = []*regexp.Regexp{
	regexp.MustCompile(`^\[(builtin#\d+|C)\]:`),
	regexp.MustCompile(`^/usr/share/lua/5\.1/resty/core/exit\.lua:\d+: in function 'exit'$`),
}

func TestLuaStacks(t *testing.T) {
	nginxtest.RequireRoot(t)
	if _, err := exec.LookPath("gdb"); err != nil {
		testenv.SkipOrFail(t, "gdb not found (internal/nginxtest/setup-deps.sh installs it)")
	}
	b := nginxtest.BuildOpenResty(t)
	nginxtest.InstallOpenResty(t, b)
	srv, addr := luaServer(t)
	base := "http://" + addr
	master := strconv.Itoa(srv.MasterPID())

	p := startProbe(t, "run", "-p", master, "-o", "json", "-e",
		`ngx_http_lua_ffi_exit { print(status); stack } ngx_http_finalize_request { print(rc); stack }`)
	if !strings.Contains(p.stderr.String(), "stacks show Lua frames: ngx_http_lua_module.so on libluajit-5.1.so.2") {
		t.Errorf("ngxprobe does not say it reads Lua frames: %s", p)
	}

	// One request at a time: its ngx_http_lua_ffi_exit event is the last.
	type result struct {
		id, path string
		ev       stackEvent
		tb       []string
	}
	var results []result
	for i, path := range []string{"/file", "/inline", "/pcall", "/deep"} {
		id := strconv.Itoa(i + 1)
		before := len(exitEvents(t, p))
		code, _ := httpGetMaybe(base + path + "?id=" + id)
		var r result
		ok := waitUntil(eventTimeout, func() bool {
			evs := exitEvents(t, p)
			r = result{id: id, path: path, tb: traceback(srv.ErrorLog(), id)}
			if len(evs) > before {
				r.ev = evs[len(evs)-1]
			}
			return r.tb != nil && r.ev.Stack != nil
		})
		if !ok {
			t.Fatalf("%s (status %d): no traceback %q in the error log or no event: %s\nerror log:\n%s", path, code, id, p, srv.ErrorLog())
		}
		results = append(results, r)
	}
	// A request with no Lua at all.
	if code, body := httpGet(t, base+"/plain"); code != 200 || body != "plain\n" {
		t.Fatalf("/plain: %d %q", code, body)
	}
	// Its finalize event (no Lua frames) and the five before it.
	waitUntil(eventTimeout, func() bool {
		n := 0
		for _, ev := range stackEvents(t, p) {
			if ev.Function == "ngx_http_finalize_request" && ev.Stack != nil {
				n++
			}
		}
		return n >= 5
	})

	compared, matched := 0, 0
	for _, r := range results {
		t.Run(strings.TrimPrefix(r.path, "/"), func(t *testing.T) {
			got := luaTexts(r.ev.Stack)
			want := r.tb
			t.Logf("debug.traceback():\n\t%s\nngxprobe's Lua frames:\n\t%s", strings.Join(want, "\n\t"), strings.Join(got, "\n\t"))
			if len(got) < len(exitFrames) {
				t.Fatalf("%d Lua frames, want at least %d", len(got), len(exitFrames))
			}
			for i, re := range exitFrames {
				if !re.MatchString(got[i]) {
					t.Errorf("Lua frame %d %q, want %s", i, got[i], re)
				}
			}
			got = got[len(exitFrames):]
			if r.path == "/deep" {
				// 33 levels: debug.traceback() prints the first 11, "...",
				// the last 10; the walk copies 24 frames and says so.
				if !strings.HasSuffix(got[len(got)-1], "more Lua frames than the walk copies)") {
					t.Errorf("the deep stack is not marked truncated: last frame %q", got[len(got)-1])
				}
				got = got[:len(got)-1]
				if i := indexOf(want, "..."); i != 11 {
					t.Fatalf("the traceback has no \"...\" after 11 levels: %q", want)
				}
				want = want[:11]
				got = got[:min(len(got), len(want))]
			}
			for i := range max(len(got), len(want)) {
				compared++
				switch {
				case i >= len(got):
					t.Errorf("frame %d: ngxprobe has none, debug.traceback() has %q", i, want[i])
				case i >= len(want):
					t.Errorf("frame %d: ngxprobe has %q, debug.traceback() has none", i, got[i])
				case got[i] != want[i]:
					t.Errorf("frame %d: ngxprobe has %q, debug.traceback() has %q", i, got[i], want[i])
				default:
					matched++
				}
			}
		})
	}
	t.Logf("Lua frames compared with debug.traceback(): %d, matched: %d", compared, matched)

	t.Run("no_lua_running", func(t *testing.T) {
		// At ngx_http_finalize_request, lua-nginx-module has already reset
		// the coroutine: no Lua runs, and that is no error.
		n := 0
		for _, ev := range stackEvents(t, p) {
			if ev.Function != "ngx_http_finalize_request" || ev.Stack == nil {
				continue
			}
			n++
			if got := luaTexts(ev.Stack); len(got) > 0 {
				t.Errorf("finalize event has Lua frames %q", got)
			}
			if len(ev.Stack.Notes) > 0 {
				t.Errorf("finalize event has notes %q", ev.Stack.Notes)
			}
		}
		if n < 5 {
			t.Errorf("%d finalize events with a stack, want one per request (5)", n)
		}
	})

	stopProbeOK(t, p)

	t.Run("gdb", func(t *testing.T) {
		// The C frames around the Lua ones are gdb's, frame for frame, in
		// interpreted code (neither unwinds C frames under a JIT trace).
		flushJIT(t, base)
		workers := srv.WorkerPIDs()
		worker := workers[0]
		p := startProbe(t, "run", "-p", master, "-o", "json", "-e", `ngx_http_lua_ffi_exit { stack }`)
		httpGetMaybe(base + "/file?id=gdb")
		var ev stackEvent
		if !waitUntil(eventTimeout, func() bool {
			evs := exitEvents(t, p)
			if len(evs) > 0 {
				ev = evs[0]
			}
			return ev.Stack != nil
		}) {
			t.Fatalf("no event: %s", p)
		}
		stopProbeOK(t, p)
		want := gdbBacktraceAt(t, gdbRun{worker: worker, fn: "ngx_http_lua_ffi_exit", trigger: func() error {
			httpGetMaybe(base + "/file?id=gdb2") // 444: closed with no response
			return nil
		}})
		compareWithGDB(t, cFrames(ev.Stack), want, modulePaths(t, worker))
	})

	t.Run("jit", func(t *testing.T) {
		p := startProbe(t, "run", "-p", master, "-o", "json", "-e", `ngx_http_lua_ffi_exit { stack }`)
		testLuaJIT(t, p, base)
		stopProbeOK(t, p)
	})

	t.Run("no_luajit_debug_info", func(t *testing.T) {
		flushJIT(t, base)
		nginxtest.RemoveDebs(t, "libluajit2-5.1-2-dbgsym")
		p := startProbe(t, "run", "-p", master, "-o", "json", "-e", `ngx_http_lua_ffi_exit { stack }`)
		want := "note: no Lua frames in stacks: no debug info for the Lua walk: libluajit-5.1.so.2.1.0 has no DWARF"
		if !strings.Contains(p.stderr.String(), want) || !strings.Contains(p.stderr.String(), "libluajit2-5.1-2-dbgsym") {
			t.Errorf("stderr lacks %q and the package to install: %s", want, p)
		}
		httpGetMaybe(base + "/file?id=nodbg")
		var ev stackEvent
		if !waitUntil(eventTimeout, func() bool {
			evs := exitEvents(t, p)
			if len(evs) > 0 {
				ev = evs[0]
			}
			return ev.Stack != nil
		}) {
			t.Fatalf("no event: %s", p)
		}
		stopProbeOK(t, p)
		if got := luaTexts(ev.Stack); len(got) > 0 {
			t.Errorf("Lua frames without LuaJIT's debug info: %q", got)
		}
		if len(ev.Stack.Frames) < 5 || ev.Stack.Frames[0].Symbol != "ngx_http_lua_ffi_exit" {
			t.Errorf("the C stack does not start at ngx_http_lua_ffi_exit or is short: %+v", ev.Stack.Frames)
		}
	})
}

// testLuaJIT runs /jit until LuaJIT compiles it: a hit in a trace names
// the trace and its start, then only frames the interpreter kept, the
// same as when interpreted.
func testLuaJIT(t *testing.T, p *proc, base string) {
	flushJIT(t, base)
	before := len(exitEvents(t, p))
	const requests = 300
	for range requests {
		httpGetMaybe(base + "/jit")
	}
	var evs []stackEvent
	waitUntil(eventTimeout, func() bool {
		evs = exitEvents(t, p)[before:]
		return len(evs) >= requests
	})
	if len(evs) < requests {
		t.Fatalf("%d events for %d requests", len(evs), requests)
	}
	interpreted := luaTexts(evs[0].Stack)
	t.Logf("interpreted:\n\t%s", strings.Join(interpreted, "\n\t"))
	if len(interpreted) != 5 {
		t.Fatalf("interpreted /jit has %d Lua frames, want 5 (ffi, exit, deny, wrap, main)", len(interpreted))
	}
	wantTrace := regexp.MustCompile(`^JIT trace \d+, started at \S+:\d+( in function <[^>]+>)?: the frames it inlined are not known$`)
	traced := 0
	for _, ev := range evs {
		got := luaTexts(ev.Stack)
		if len(got) == 0 || !strings.HasPrefix(got[0], "JIT trace ") {
			continue
		}
		traced++
		if !wantTrace.MatchString(got[0]) {
			t.Errorf("trace frame %q, want %s", got[0], wantTrace)
		}
		// The frames below the trace's base: the interpreted frames' tail;
		// the first of them, the trace's base frame, has no current line.
		rest := got[1:]
		if len(rest) == 0 || len(rest) >= len(interpreted) {
			t.Errorf("JIT stack %q: want 1 to %d frames below the trace", got, len(interpreted)-1)
			continue
		}
		tail := interpreted[len(interpreted)-len(rest):]
		for i := range rest {
			if i == 0 && rest[i] != tail[i] && stripLine(rest[i]) != stripLine(tail[i]) {
				t.Errorf("JIT frame %q is not the interpreted %q", rest[i], tail[i])
			}
			if i > 0 && rest[i] != tail[i] {
				t.Errorf("JIT frame %q is not the interpreted %q", rest[i], tail[i])
			}
		}
		if traced == 1 {
			t.Logf("in a trace:\n\t%s", strings.Join(got, "\n\t"))
		}
	}
	t.Logf("%d of %d hits ran in a JIT trace", traced, len(evs))
	if traced == 0 {
		t.Errorf("no hit ran in a JIT trace after %d requests", requests)
	}
}

// flushJIT makes LuaJIT drop its traces: the next requests run
// interpreted.
func flushJIT(t *testing.T, base string) {
	t.Helper()
	if code, body := httpGet(t, base+"/flush"); code != 200 || body != "flushed\n" {
		t.Fatalf("/flush: %d %q", code, body)
	}
}

// stripLine drops a frame's current line: "src:12: in ..." -> "src: in ...".
func stripLine(s string) string {
	return regexp.MustCompile(`^(.*?):\d+:( in .*)$`).ReplaceAllString(s, "$1:$2")
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// httpGetMaybe sends GET url; an error is no failure: a 444 closes the
// connection with no response.
func httpGetMaybe(url string) (int, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// waitUntil polls cond for up to d.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// luaCosocketEOF reads from a backend that closed before the read: the
// FIN is pending, so the recv inside the Lua call sees it.
const luaCosocketEOF = `
        location = /cosocket-eof {
            content_by_lua_block {
                local sock = ngx.socket.tcp()
                local ok, err = sock:connect("127.0.0.1", %d)
                if not ok then ngx.say("connect: ", err) return end
                ngx.sleep(0.2)
                local line, err = sock:receive("*l") -- the read that sees EOF
                ngx.say("receive: ", tostring(line), " ", tostring(err))
            }
        }`

// TestLuaWatch: watch c->read->eof shows the Lua code whose cosocket
// read hit EOF: the flip's stack has the Lua frame of the receive line.
func TestLuaWatch(t *testing.T) {
	nginxtest.RequireRoot(t)
	b := nginxtest.BuildOpenResty(t)
	nginxtest.InstallOpenResty(t, b)
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			c.Close() // FIN at once
		}
	}()
	port := nginxtest.FreePort(t)
	srv := nginxtest.StartPackaged(t, nginxtest.LuaConfig(nginxtest.Config{HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
%s
    }`, port, fmt.Sprintf(luaCosocketEOF, backend.Addr().(*net.TCPAddr).Port))}))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	p := startProbe(t, "watch", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", "c->read->eof")
	code, body := httpGet(t, base+"/cosocket-eof")
	if code != 200 || body != "receive: nil closed\n" {
		t.Fatalf("/cosocket-eof: %d %q", code, body)
	}
	// The chunk's line of the receive call: Lua line 1 is the line of the
	// block's "{" in nginx.conf.
	conf := strings.Split(readConf(t, srv), "\n")
	first, recvLine := 0, 0
	for i, l := range conf {
		if strings.Contains(l, "content_by_lua_block {") {
			first = i + 1
		}
		if strings.Contains(l, "-- the read that sees EOF") {
			recvLine = i + 1 - first + 1
		}
	}
	want := fmt.Sprintf("content_by_lua(nginx.conf:%d):%d: in main chunk", first, recvLine)
	type luaFlip struct {
		Flip  Flip       `json:"flip"`
		Stack *jsonStack `json:"stack"`
	}
	var got luaFlip
	if !waitUntil(eventTimeout, func() bool {
		for _, f := range jsonLines[luaFlip](t, p) {
			if f.Flip.Role == "upstream" && f.Flip.New == 1 && f.Stack != nil {
				got = f
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no eof flip on the cosocket's connection: %s", p)
	}
	stopProbeOK(t, p)
	texts := luaTexts(got.Stack)
	t.Logf("flip in %s at %s:%d; Lua frames:\n\t%s", got.Flip.Function, got.Flip.File, got.Flip.Line, strings.Join(texts, "\n\t"))
	if got.Flip.Function != "ngx_unix_recv" {
		t.Errorf("eof flipped in %s, want ngx_unix_recv", got.Flip.Function)
	}
	if len(texts) != 2 || texts[0] != "[C]: in function 'receive'" || texts[1] != want {
		t.Errorf("Lua frames %q, want the C function receive and %q", texts, want)
	}
	// The Lua frames stand where the VM ran them: above lj_BC_FUNCC.
	for i, f := range got.Stack.Frames {
		if f.Lua != nil && i+1 < len(got.Stack.Frames) && got.Stack.Frames[i+1].Lua == nil && got.Stack.Frames[i+1].Symbol != "lj_BC_FUNCC" {
			t.Errorf("the last Lua frame is followed by %q, want the VM's lj_BC_FUNCC", got.Stack.Frames[i+1].Symbol)
		}
	}
}

// readConf is the nginx.conf the server runs.
func readConf(t *testing.T, srv *nginxtest.Server) string {
	data, err := os.ReadFile(filepath.Join(srv.Dir(), "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
