package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// The Lua hit loop: Lua code calls a C function of lua-nginx-module
// (ngx.get_phase() -> ngx_http_lua_ffi_get_phase, through LuaJIT's FFI)
// in a loop three Lua calls deep, and times itself with os.clock(), the
// worker's CPU time, which the traps are charged to. JIT compilation is
// off, so every hit walks interpreter frames: the deepest walk the
// gateway's code gives (with JIT on, the loop runs in a trace, and the
// walk stops at the trace's base).
const luaLoop = `
    init_by_lua_block { jit.off() }
    server {
        listen 127.0.0.1:%d;
        location = /loop {
            content_by_lua_block {
                local get_phase = ngx.get_phase
                local function leaf(n) for i = 1, n do get_phase() end end
                local function mid(n) leaf(n) end
                local function top(n) mid(n) end
                local n = tonumber(ngx.var.arg_n)
                local t0 = os.clock()
                top(n)
                ngx.say(string.format("%%.1f", (os.clock() - t0) * 1e9 / n))
            }
        }
    }`

// luaVariants are the probes on ngx_http_lua_ffi_get_phase compared; each
// is "" (no probe), "empty" (the floor) or ngxprobe's arguments.
var luaVariants = []struct{ name, args string }{
	{"none", ""},
	{"empty_uprobe", "empty"},
	{"stack_c_only", "--no-lua -e ngx_http_lua_ffi_get_phase { stack }"},
	{"stack_with_lua", "-e ngx_http_lua_ffi_get_phase { stack }"},
	{"lua_where", "-e ngx_http_lua_ffi_get_phase { print($lua_where) }"},
	{"lua_chunk_filter_drops", `-e ngx_http_lua_ffi_get_phase / $lua_chunk == "nomatch.lua" / { print($lua_where) }`},
	{"one_value", "-e ngx_http_lua_ffi_get_phase { print(r) }"},
}

// BenchmarkLuaHitCost: the cost per hit of a stack with Lua frames,
// against a stack of C frames only and against the empty-uprobe floor,
// with the hit loop driven from Lua; variants alternate, RUNS times
// (default 5), and each figure is the median.
//
//	go test ./bench -run '^$' -bench LuaHitCost -benchtime 1x
func BenchmarkLuaHitCost(b *testing.B) {
	nginxtest.RequireRoot(b)
	build := nginxtest.BuildOpenResty(b)
	nginxtest.InstallOpenResty(b, build)
	ngxprobe := ngxprobeBinary(b)
	empty := emptyprobeBinary(b)
	port := nginxtest.FreePort(b)
	srv := nginxtest.StartPackaged(b, nginxtest.LuaConfig(nginxtest.Config{HTTP: fmt.Sprintf(luaLoop, port)}))
	url := fmt.Sprintf("http://127.0.0.1:%d/loop?n=", port)
	master := strconv.Itoa(srv.MasterPID())
	module := "/usr/lib/nginx/modules/ngx_http_lua_module.so"
	runs := 5
	if s := os.Getenv("RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	const calls = 20000
	loop(b, url+"1000") // warm up: resty.core loaded, code cache filled

	results := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		for range runs {
			for _, v := range luaVariants {
				var stop func() string
				switch v.args {
				case "":
				case "empty":
					stop = startAttached(b, exec.Command(empty, module, "ngx_http_lua_ffi_get_phase"), "attached")
				default:
					args := append([]string{"run", "-p", master, "--ringbuf", "268435456", "-o", "json"}, splitArgs(v.args)...)
					stop = startAttached(b, exec.Command(ngxprobe, args...), "ngxprobe: attached")
				}
				ns := loop(b, url+strconv.Itoa(calls))
				if stop != nil {
					if out := stop(); lostEvents.MatchString(out) {
						b.Logf("%s lost events: %s", v.name, lastLine(out))
					}
				}
				results[v.name] = append(results[v.name], ns)
			}
		}
	}
	floor := median(results["empty_uprobe"])
	var table strings.Builder
	fmt.Fprintf(&table, "%-24s %12s %8s\n", "variant", "ns/call", "ratio")
	for _, v := range luaVariants {
		m := median(results[v.name])
		fmt.Fprintf(&table, "%-24s %12.0f %8.2f\n", v.name, m, m/floor)
		b.ReportMetric(m, v.name+"-ns/call")
	}
	b.Logf("Lua hit loop, %d calls per run, medians of %d alternating runs (os.clock() of the worker):\n%s", calls, runs, table.String())
}

// lostEvents finds a summary that lost events (JSON on stderr).
var lostEvents = regexp.MustCompile(`"lost":[1-9]`)

// splitArgs splits "-e SCRIPT" style arguments: flags by spaces, the
// script after -e whole.
func splitArgs(s string) []string {
	var out []string
	for s != "" {
		if rest, ok := strings.CutPrefix(s, "-e "); ok {
			return append(out, "-e", rest)
		}
		f, rest, _ := strings.Cut(s, " ")
		out, s = append(out, f), rest
	}
	return out
}

// loop runs the Lua loop once and returns its ns per call.
func loop(b *testing.B, url string) float64 {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Minute}
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	ns, err := strconv.ParseFloat(strings.TrimSpace(string(body)), 64)
	if err != nil {
		b.Fatalf("%s: %q: %v", url, body, err)
	}
	return ns
}

// startAttached starts cmd, waits for ready on its stderr, and returns
// a stop function (SIGINT, wait) that returns its stderr.
func startAttached(b *testing.B, cmd *exec.Cmd, ready string) func() string {
	b.Helper()
	var stderr strings.Builder
	// Only the start of stdout is kept: bpftrace says "Attaching" there.
	stdout := &headWriter{max: 4096}
	cmd.Stdout = stdout
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), ready) && !strings.Contains(stdout.String(), ready) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatalf("%s: not attached: %s", cmd.Path, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() string {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
		}
		return stderr.String()
	}
}

// headWriter keeps the first max bytes written to it and discards the
// rest. It is safe for concurrent use.
type headWriter struct {
	mu   sync.Mutex
	max  int
	head []byte
}

func (w *headWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - len(w.head); room > 0 {
		w.head = append(w.head, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (w *headWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.head)
}

// emptyprobeBinary builds the floor's probe.
func emptyprobeBinary(b *testing.B) string {
	b.Helper()
	return toolBinary(b, "emptyprobe")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// luaGateway is the lua examples' healthy traffic: an access-phase
// plugin that lets a request with the key through (lua-exit-444's 444 is
// for the others), and a content handler that asks a backend over a
// keepalive cosocket (lua-cosocket-reset's reset is the backend's).
const luaGateway = `
    init_by_lua_block { package.path = "%[1]s/?.lua;" .. package.path }
    server {
        listen 127.0.0.1:%[2]d;
        location /api/ {
            access_by_lua_block { require("auth").check() }
            return 200 "ok\n";
        }
        location = /price {
            content_by_lua_block { require("quote").price(%[3]d) }
        }
    }`

const luaAuth = `local _M = {}
function _M.check()
    if ngx.var.http_x_api_key ~= "k1" then
        return ngx.exit(444)
    end
end
return _M
`

const luaQuote = `local _M = {}
function _M.price(port)
    local sock = ngx.socket.tcp()
    sock:settimeout(1000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then ngx.exit(502) end
    sock:send("ACME\n")
    local line, err = sock:receive("*l")
    if not line then ngx.exit(502) end
    sock:setkeepalive(10000, 16)
    ngx.say(line)
end
return _M
`

// BenchmarkLuaExamplesThroughput: nginx throughput with the lua
// examples attached, under wrk (-t1 -c16, keepalive, 5 s), against the
// same config without ngxprobe, alternating RUNS times (default 3), and
// ngxprobe's own CPU during the runs. The traffic is healthy: a probe set
// that costs it is a probe set nobody leaves attached.
//
//	go test ./bench -run '^$' -bench LuaExamplesThroughput -benchtime 1x
func BenchmarkLuaExamplesThroughput(b *testing.B) {
	nginxtest.RequireRoot(b)
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatalf("wrk: %v", err)
	}
	build := nginxtest.BuildOpenResty(b)
	nginxtest.InstallOpenResty(b, build)
	ngxprobe := ngxprobeBinary(b)
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for name, src := range map[string]string{"auth.lua": luaAuth, "quote.lua": luaQuote} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	backend := lineServer(b)
	port := nginxtest.FreePort(b)
	srv := nginxtest.StartPackaged(b, nginxtest.LuaConfig(nginxtest.Config{HTTP: fmt.Sprintf(luaGateway, dir, port, backend)}))
	master := strconv.Itoa(srv.MasterPID())
	runs := 3
	if s := os.Getenv("RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	cases := []struct{ example, path string }{
		{"lua-exit-444", "/api/x"},
		{"lua-cosocket-reset", "/price"},
	}
	rps := map[string][]float64{}
	ticks := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		for range runs {
			for _, c := range cases {
				url := fmt.Sprintf("http://127.0.0.1:%d%s", port, c.path)
				rps[c.example+" none"] = append(rps[c.example+" none"], wrk(b, url))
				cmd := exec.Command(ngxprobe, "run", "-p", master, filepath.Join(root, "examples", c.example, c.example+".ngxp"))
				// After the one-time indexing of the workers' modules for
				// stacks: what is measured is the cost while attached.
				stop := startAttached(b, cmd, "ngxprobe: stacks ready")
				before := cpuTicks(cmd.Process.Pid)
				rps[c.example+" attached"] = append(rps[c.example+" attached"], wrk(b, url))
				ticks[c.example] = append(ticks[c.example], float64(cpuTicks(cmd.Process.Pid)-before))
				if out := stop(); !strings.Contains(out, "ngxprobe: detached") {
					b.Fatalf("%s: %s", c.example, out)
				}
			}
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-20s %-8s %10s %10s %9s %16s\n", "example", "path", "none r/s", "attached", "retention", "ngxprobe ticks")
	for _, c := range cases {
		none, with := median(rps[c.example+" none"]), median(rps[c.example+" attached"])
		fmt.Fprintf(&table, "%-20s %-8s %10.0f %10.0f %9.3f %16.0f\n", c.example, c.path, none, with, with/none, median(ticks[c.example]))
		b.ReportMetric(with/none, c.example+"-retention")
	}
	b.Logf("wrk -t1 -c16 -d5s, healthy traffic, medians of %d alternating runs; ngxprobe's CPU in clock ticks (1/100 s) per run:\n%s", runs, table.String())
}

// wrk runs wrk for 5 s on url with the plugin's key and returns
// requests per second.
func wrk(b *testing.B, url string) float64 {
	b.Helper()
	return wrkFor(b, url, "X-Api-Key: k1", 5)
}

// cpuTicks is a process's user and system CPU, in clock ticks.
func cpuTicks(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	sys, _ := strconv.Atoi(f[12])
	return u + sys
}

// lineServer answers each line with "42": the cosocket's backend. It
// stops with the benchmark.
func lineServer(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := io.WriteString(c, "42\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
