package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// The nginx that people run: Debian's own nginx package, built with its
// own rules (internal/nginxtest's BuildDeb), installed at its real paths,
// stripped, with stream as a dynamic module, and its debug info in -dbgsym
// packages: served by a real debuginfod, or installed under
// /usr/lib/debug.

// packagedPackages are installed for every packaged test.
var packagedPackages = []string{"nginx", "nginx-common", "libnginx-mod-stream"}

// dbgsymPackages hold the debug info of packagedPackages.
var dbgsymPackages = []string{"nginx-dbgsym", "libnginx-mod-stream-dbgsym"}

// packagedScenarios are the example scenarios rerun on the packaged nginx.
var packagedScenarios = []string{"client-abort-499/client-abort", "wss-eof/half-close", "wss-eof/backend-close"}

func TestPackaged(t *testing.T) {
	nginxtest.RequireRoot(t)
	build := nginxtest.BuildDeb(t)
	nginxtest.InstallDebs(t, build, packagedPackages...)
	nginxtest.RemoveDebs(t, dbgsymPackages...)
	id, err := nginxtest.BuildID(nginxtest.PackagedBinary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(nginxtest.DebugFileByBuildID(id)); err == nil {
		t.Fatalf("%s exists: the debuginfod case must have no local debug file", nginxtest.DebugFileByBuildID(id))
	}

	t.Run("debuginfod", func(t *testing.T) {
		d := nginxtest.StartDebuginfod(t, build.Dir)
		env := []string{"DEBUGINFOD_URLS=" + d.URL, "DEBUGINFOD_CACHE_PATH=" + t.TempDir()}
		checkPackagedExamples(t, env, "debuginfod ")
		runPackagedScenarios(t, env)
		t.Run("stream", func(t *testing.T) { testStreamReset(t, env, d.URL) })
		t.Run("closes", func(t *testing.T) { testClosesPackaged(t, env) })
		t.Run("libc_close", func(t *testing.T) { testLibcClose(t, env) })
		t.Run("bad_debuginfod", func(t *testing.T) { testBadDebuginfod(t, id) })
		t.Run("deleted_module", func(t *testing.T) { testDeletedModule(t, env) })
		t.Run("module_after_attach", func(t *testing.T) { testModuleAfterAttach(t, env) })
	})
	t.Run("dbgsym", func(t *testing.T) {
		nginxtest.InstallDebs(t, build, dbgsymPackages...)
		if _, err := os.Stat(nginxtest.DebugFileByBuildID(id)); err != nil {
			t.Fatalf("nginx-dbgsym installed, but: %v", err)
		}
		checkPackagedExamples(t, nil, "build-id /usr/lib/debug/.build-id/")
		runPackagedScenarios(t, nil)
		t.Run("stream", func(t *testing.T) { testStreamReset(t, nil, "") })
	})
	t.Run("module_without_debug_info", func(t *testing.T) {
		nginxtest.InstallDebs(t, build, "nginx-dbgsym")
		testModuleWithoutDebugInfo(t)
	})
}

// checkPackagedExamples: check resolves every example against the
// packaged nginx, with debug info from where source says.
func checkPackagedExamples(t *testing.T, env []string, source string) {
	t.Helper()
	for _, name := range exampleNames {
		start := time.Now()
		p := runProbeEnv(t, env, ngx("check", "--binary", nginxtest.PackagedBinary, exampleScript(t, name))...)
		checkNoPanic(t, p)
		if p.exitCode() != 0 || !strings.Contains(p.stdout.String(), "(debug info: "+source) {
			t.Errorf("check %s on the packaged nginx: exit %d, want 0 and debug info from %q: %s", name, p.exitCode(), source, p)
		}
		t.Logf("check %s: %v", name, time.Since(start).Round(time.Millisecond))
	}
}

// runPackagedScenarios reruns the 499 and wss scenarios on the packaged
// nginx: the diagnosis must be the one our own builds give.
func runPackagedScenarios(t *testing.T, env []string) {
	t.Helper()
	target := exampleTarget{variant: nginxtest.VariantDeb, env: env, start: func(t *testing.T, cfg nginxtest.Config) *nginxtest.Server {
		return nginxtest.StartPackaged(t, cfg)
	}}
	n := 0
	for _, c := range exampleCases {
		if !contains(packagedScenarios, c.example+"/"+c.scenario) {
			continue
		}
		n++
		t.Run(c.example+"/"+c.scenario, func(t *testing.T) { runExampleCase(t, target, c) })
	}
	if n != len(packagedScenarios) {
		t.Errorf("%d of the packaged scenarios %v are example cases", n, packagedScenarios)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// streamScript probes the stream module's session end, in the module's
// own file.
const streamScript = `ngx_stream_module.so:ngx_stream_finalize_session {
	print(conn = s->connection->number, rc, status = s->status, eof = s->connection->read->eof, error = s->connection->read->error)
	stack
}`

// streamReset matches the error-log line of an upstream that reset a
// proxied TCP connection.
var streamReset = regexp.MustCompile(`\*(\d+) recv\(\) failed \(104: Connection reset by peer\)`)

// resetBackend accepts TCP connections, reads what the client sends
// first, and resets the connection (SO_LINGER 0).
func resetBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c *net.TCPConn) {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 16)
				_, _ = c.Read(buf)
				_ = c.SetLinger(0)
				c.Close()
			}(c.(*net.TCPConn))
		}
	}()
	return ln.Addr().String()
}

// streamClient sends a line through the proxy and reads until nginx
// closes the connection.
func streamClient(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("nginx did not close the proxied connection: %w", err)
	}
	return nil // EOF or reset: nginx closed it
}

// testStreamReset: the upstream of a TCP proxy (the dynamic stream
// module) resets the connection. A probe on a function of
// ngx_stream_module.so reads the session's connection and flags; its
// stack names the module's frames with file:line, as gdb does.
func testStreamReset(t *testing.T, env []string, debuginfodURL string) {
	port := nginxtest.FreePort(t)
	backend := resetBackend(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{
		Modules: []string{"ngx_stream_module"},
		Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", port, backend),
		HTTP:    plainServer(nginxtest.FreePort(t), ""),
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < exampleWarmups; i++ { // so that the incident is not *1
		if err := streamClient(addr); err != nil {
			t.Fatal(err)
		}
	}
	p := startProbeEnv(t, env, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", "-e", streamScript)
	if err := streamClient(addr); err != nil {
		t.Fatal(err)
	}
	var conn int64
	deadline := time.Now().Add(eventTimeout)
	for conn == 0 && time.Now().Before(deadline) {
		if m := streamReset.FindAllStringSubmatch(srv.ErrorLog(), -1); len(m) > 0 {
			conn, _ = strconv.ParseInt(m[len(m)-1][1], 10, 64)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if conn == 0 {
		t.Fatalf("no %q line in the error log:\n%s", streamReset, srv.ErrorLog())
	}
	var ev exEvent
	for time.Now().Before(deadline) && ev.Stack == nil {
		for _, e := range exEvents(t, p) {
			if e.is("conn", conn) {
				ev = e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopProbeOK(t, p)
	// Read once ngxprobe has exited: the summary's lines follow "attached".
	if !strings.Contains(p.stderr.String(), "ngx_stream_finalize_session in ngx_stream_module.so") {
		t.Errorf("the attach summary does not name the module: %s", p)
	}
	if ev.Stack == nil {
		t.Fatalf("no ngx_stream_finalize_session event with a stack for *%d (the error log's): %s", conn, p)
	}
	t.Logf("stream event for *%d: %s", conn, ev)
	// The proxy's handlers end in tail calls (jmp), so the module's frame
	// on the stack is the probed one; gdb agrees (below).
	var sawModule, sawCore bool
	for _, f := range ev.Stack.Frames {
		switch {
		case f.Module == "ngx_stream_module.so" && normalizeSymbol(f.Symbol) == "ngx_stream_finalize_session":
			sawModule = strings.HasSuffix(f.File, "src/stream/ngx_stream_handler.c") && f.Line > 0
		case f.Module == "nginx" && normalizeSymbol(f.Symbol) == "ngx_epoll_process_events":
			sawCore = f.Line > 0
		}
	}
	if !sawModule || !sawCore {
		t.Errorf("stack: the module's frame with file:line %v, nginx's event loop %v; frames: %s", sawModule, sawCore, strings.Join(ev.frames(), " < "))
	}
	if ev.Stack.Truncated {
		t.Errorf("stack truncated: %s", ev.Stack.Reason)
	}
	// gdb, with the same debug info (fetched from the same debuginfod, or
	// the installed dbgsym), stops at the same function: the same frames.
	workers := srv.WorkerPIDs()
	if len(workers) != 1 {
		t.Fatalf("want 1 worker, have %v", workers)
	}
	want := gdbBacktraceAt(t, gdbRun{worker: workers[0], fn: "ngx_stream_finalize_session", debuginfod: debuginfodURL,
		env: []string{"DEBUGINFOD_CACHE_PATH=" + t.TempDir()}, trigger: func() error { return streamClient(addr) }})
	compareWithGDB(t, ev.Stack, want, modulePaths(t, workers[0]))
}

// testLibcClose: a probe on libc's close with a stack shows the nginx
// frames that closed a client connection.
func testLibcClose(t *testing.T, env []string) {
	port := nginxtest.FreePort(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{HTTP: plainServer(port, "")})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProbeEnv(t, env, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", "-e", "libc.so.6:close { print(fd) stack }")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := client.Get(base + "/close")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var found exEvent
	deadline := time.Now().Add(eventTimeout)
	for found.Stack == nil && time.Now().Before(deadline) {
		for _, e := range exEvents(t, p) {
			names := strings.Join(e.frames(), " ")
			if e.Stack != nil && strings.Contains(names, "ngx_close_connection") && strings.Contains(names, "ngx_http_close_connection") {
				found = e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopProbeOK(t, p)
	if found.Stack == nil {
		t.Fatalf("no libc close whose stack has ngx_close_connection < ngx_http_close_connection: %s", p)
	}
	if f := found.Stack.Frames[0]; f.Module != "libc.so.6" || !pidIn(found.PID, srv.WorkerPIDs()) {
		t.Errorf("close event: first frame %s in %s, pid %d (workers %v)", f.Symbol, f.Module, found.PID, srv.WorkerPIDs())
	}
	t.Logf("close: %s", strings.Join(found.frames(), " < "))
}

// testBadDebuginfod: a debuginfod that is down, has nothing, is too slow,
// or sends a wrong or truncated file. Each gets a clear message; ngxprobe
// falls back to what works without DWARF (exported functions by name);
// no cache entry is left; nginx is undisturbed.
func testBadDebuginfod(t *testing.T, id string) {
	port := nginxtest.FreePort(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{HTTP: plainServer(port, "")})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	master := strconv.Itoa(srv.MasterPID())
	other, err := os.ReadFile("/usr/bin/true") // an ELF with another build-id
	if err != nil {
		t.Fatal(err)
	}
	serve := func(h http.HandlerFunc) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &http.Server{Handler: h}
		go s.Serve(ln)
		t.Cleanup(func() { s.Close() })
		return "http://" + ln.Addr().String()
	}
	closedPort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}
	for _, c := range []struct {
		name string
		url  string
		env  []string
		want []string
	}{
		{"down", closedPort(), nil, []string{"connection refused"}},
		{"404", serve(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }), nil, []string{"not found"}},
		{"slow", serve(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		}), []string{"DEBUGINFOD_TIMEOUT=1"}, []string{"timed out"}},
		{"wrong_build_id", serve(func(w http.ResponseWriter, r *http.Request) { w.Write(other) }), nil, []string{"build-id"}},
		{"truncated", serve(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(other)*4))
			w.Write(other)
		}), nil, []string{"debuginfod"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := t.TempDir()
			env := append([]string{"DEBUGINFOD_URLS=" + c.url, "DEBUGINFOD_CACHE_PATH=" + cache}, c.env...)
			start := time.Now()
			// The default set reads arguments: refused, saying why.
			p := runProbeEnv(t, env, ngx("run", "-p", master, "-o", "json", "--duration", "1s")...)
			checkNoPanic(t, p)
			if p.exitCode() != 1 || !strings.Contains(p.stderr.String(), "debug info") {
				t.Errorf("default set with a bad debuginfod: exit %d, want 1 and a debug-info message: %s", p.exitCode(), p)
			}
			// funcs says what happened with debuginfod.
			f := runProbeEnv(t, env, ngx("funcs", "-p", master, "ngx_http_finalize_request")...)
			head := f.stdout.String()
			for _, w := range c.want {
				if !strings.Contains(strings.ToLower(head), strings.ToLower(w)) {
					t.Errorf("funcs header lacks %q: %s", w, f)
				}
			}
			// An exported function still attaches by name.
			r := runProbeEnv(t, env, ngx("run", "-p", master, "-o", "json", "--duration", "1s", "--probe", "ngx_http_finalize_request")...)
			if r.exitCode() != 0 {
				t.Errorf("run --probe ngx_http_finalize_request with a bad debuginfod: exit %d: %s", r.exitCode(), r)
			}
			entries, _ := filepath.Glob(filepath.Join(cache, "*", "*"))
			for _, e := range entries {
				if strings.Contains(e, id) {
					t.Errorf("cache entry %s left behind", e)
				}
			}
			checkServes(t, base)
			t.Logf("%s: three runs in %v", c.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// testDeletedModule: a module deleted on disk after nginx loaded it is
// still probed and named, through /proc/PID/map_files.
func testDeletedModule(t *testing.T, env []string) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(nginxtest.PackagedModulesDir, "ngx_stream_module.so"))
	if err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(dir, "ngx_stream_module.so")
	if err := os.WriteFile(mod, data, 0o644); err != nil {
		t.Fatal(err)
	}
	port := nginxtest.FreePort(t)
	backend := resetBackend(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{
		Modules: []string{mod},
		Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", port, backend),
		HTTP:    plainServer(nginxtest.FreePort(t), ""),
	})
	if err := os.Remove(mod); err != nil {
		t.Fatal(err)
	}
	p := startProbeEnv(t, env, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json", "-e", streamScript)
	if err := streamClient(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	var ev exEvent
	deadline := time.Now().Add(eventTimeout)
	for ev.Stack == nil && time.Now().Before(deadline) {
		if evs := exEvents(t, p); len(evs) > 0 {
			ev = evs[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopProbeOK(t, p)
	if ev.Stack == nil || len(ev.Stack.Frames) == 0 {
		t.Fatalf("no event from the deleted module: %s", p)
	}
	if f := ev.Stack.Frames[0]; normalizeSymbol(f.Symbol) != "ngx_stream_finalize_session" || f.Module != "ngx_stream_module.so" {
		t.Errorf("first frame %s in %s, want ngx_stream_finalize_session in ngx_stream_module.so: %s", f.Symbol, f.Module, ev)
	}
}

// testModuleWithoutDebugInfo: nginx has debug info, its stream module has
// none. Values of the module's functions are refused with the reason;
// the module's functions still attach by name; nginx's own probes work.
func testModuleWithoutDebugInfo(t *testing.T) {
	port := nginxtest.FreePort(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{
		Modules: []string{"ngx_stream_module"},
		Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", nginxtest.FreePort(t), resetBackend(t)),
		HTTP:    plainServer(port, ""),
	})
	master := strconv.Itoa(srv.MasterPID())
	p := runProbeEnv(t, nil, ngx("check", "-p", master, "-e", streamScript)...)
	checkNoPanic(t, p)
	if p.exitCode() != 1 || !strings.Contains(p.stderr.String(), "no DWARF debug info") || !strings.Contains(p.stderr.String(), "dbgsym") {
		t.Errorf("values of a module without debug info: exit %d, want 1 and the reason with the fix: %s", p.exitCode(), p)
	}
	p = runProbeEnv(t, nil, ngx("check", "-p", master, "-e", "ngx_stream_module.so:ngx_stream_finalize_session { stack }")...)
	if p.exitCode() != 0 || !strings.Contains(p.stdout.String(), "in ngx_stream_module.so") {
		t.Errorf("a module function by name, without values: exit %d, want 0: %s", p.exitCode(), p)
	}
	p = runProbeEnv(t, nil, ngx("check", "-p", master, exampleScript(t, "client-abort-499"))...)
	if p.exitCode() != 0 {
		t.Errorf("nginx's own probes: exit %d: %s", p.exitCode(), p)
	}
	f := runProbeEnv(t, nil, ngx("funcs", "-p", master, "ngx_stream_finalize_session")...)
	if !regexp.MustCompile(`(?m)^# /usr/lib/nginx/modules/ngx_stream_module.so \(nginx module\): debug info none, searched .*\.build-id/`).MatchString(f.stdout.String()) {
		t.Errorf("funcs does not say where the module's debug info was looked for: %s", f)
	}
	checkServes(t, fmt.Sprintf("http://127.0.0.1:%d", port))
}

// testModuleAfterAttach: a reload that loads a new module after ngxprobe
// attached is reported on stderr, never missed silently.
func testModuleAfterAttach(t *testing.T, env []string) {
	srv := nginxtest.StartPackaged(t, nginxtest.Config{HTTP: plainServer(nginxtest.FreePort(t), "")})
	p := startProbeEnv(t, env, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json")
	conf := filepath.Join(srv.Dir(), "nginx.conf")
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(nginxtest.PackagedModulesDir, "ngx_stream_module.so")
	if err := os.WriteFile(conf, append([]byte("load_module "+module+";\n"), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.Reload(t)
	want := "mapped " + module + " after attach"
	deadline := time.Now().Add(3 * moduleCheck)
	for !strings.Contains(p.stderr.String(), want) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	stopProbeOK(t, p)
	if !strings.Contains(p.stderr.String(), want) {
		t.Errorf("no note that the reload mapped %s: %s", module, p)
	}
}

// moduleCheck is how often ngxprobe reads a master's mappings for new
// modules (cmd/ngxprobe's moduleCheckInterval).
const moduleCheck = 2 * time.Second

// testClosesPackaged: closes on the packaged nginx, its debug info from
// debuginfod: a return 444 of the executable and a stream upstream reset
// in the dynamic stream module, each one verdict on the *N nginx logged.
func testClosesPackaged(t *testing.T, env []string) {
	port, httpPort := nginxtest.FreePort(t), nginxtest.FreePort(t)
	backend := resetBackend(t)
	srv := nginxtest.StartPackaged(t, nginxtest.Config{
		Modules: []string{"ngx_stream_module"},
		Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", port, backend),
		HTTP:    plainServer(httpPort, `        location = /c444 { return 444; }`),
	})
	p := startProbeEnv(t, env, "closes", "-p", strconv.Itoa(srv.MasterPID()), "-o", "json")
	if !strings.Contains(p.stderr.String(), "in ngx_stream_module.so") {
		t.Errorf("closes did not attach to the stream module: %s", p)
	}
	if err := streamClient(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	sendAndWait(t, fmt.Sprintf("127.0.0.1:%d", httpPort), "GET /c444 HTTP/1.1\r\nHost: x\r\n\r\n", 3*time.Second)
	var streamConn uint64
	deadline := time.Now().Add(eventTimeout)
	for streamConn == 0 && time.Now().Before(deadline) {
		if m := streamReset.FindAllStringSubmatch(srv.ErrorLog(), -1); len(m) > 0 {
			streamConn, _ = strconv.ParseUint(m[len(m)-1][1], 10, 64)
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn444 := awaitConn(t, srv, "return 444", "GET /c444 HTTP/1.1", "")
	time.Sleep(500 * time.Millisecond) // past the quiet period
	stopProbeOK(t, p)
	verdicts, _ := closesOutput(t, p)
	want := map[uint64]string{streamConn: "upstream/rst", conn444: "nginx/return_444"}
	for conn, cause := range want {
		var got []string
		for _, v := range verdicts {
			if v.Conn == conn {
				got = append(got, v.Initiator+"/"+v.Cause)
			}
		}
		if len(got) != 1 || got[0] != cause {
			t.Errorf("*%d: verdicts %v, want one %s: %s", conn, got, cause, p)
		}
	}
}
