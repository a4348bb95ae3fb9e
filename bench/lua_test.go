package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
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
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), ready) {
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

// emptyprobeBinary builds the floor's probe.
func emptyprobeBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "emptyprobe")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ngxprobe/ngxprobe/bench/emptyprobe").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
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
