package bench

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// captureStacks attaches a stack probe to the test nginx's ngx_unix_recv
// and returns the captures of n requests.
func captureStacks(b *testing.B, n int) []stacks.Capture {
	nginxtest.RequireRoot(b)
	inst := nginxtest.Build(b, nginxtest.VariantO2)
	port := nginxtest.FreePort(b)
	srv := nginxtest.Start(b, inst, nginxtest.Config{HTTP: fmt.Sprintf("server { listen 127.0.0.1:%d; location / { return 200; } }", port)})
	bin, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bin.Close()
	fns, err := bin.Lookup("ngx_unix_recv")
	if err != nil {
		b.Fatal(err)
	}
	sess, err := probes.Attach(inst.Binary, []*probes.Probe{{Name: "recv", Function: fns[0], Stack: true}}, probes.Options{PID: srv.MasterPID(), Children: true})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	client := &http.Client{Timeout: 2 * time.Second}
	var out []stacks.Capture
	for i := 0; i < n*2 && len(out) < n; i++ {
		if resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
			resp.Body.Close()
		}
		sess.SetDeadline(time.Now().Add(200 * time.Millisecond))
		for len(out) < n {
			ev, err := sess.Read()
			if err != nil {
				break
			}
			out = append(out, *ev.Stack)
		}
	}
	if len(out) == 0 {
		b.Fatal("no stacks captured")
	}
	return out
}

// BenchmarkUnwind: unwinding and symbolizing captured nginx stacks on one
// core, after the first event warmed the module caches.
func BenchmarkUnwind(b *testing.B) {
	caps := captureStacks(b, 64)
	u := stacks.NewUnwinder("")
	defer u.Close()
	if st := u.Unwind(caps[0]); st.Truncated || len(st.Frames) < 5 {
		b.Fatalf("warm-up stack: %d frames, truncated %v (%s)", len(st.Frames), st.Truncated, st.Reason)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u.Unwind(caps[i%len(caps)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stacks/s")
}

// BenchmarkModuleMemory: heap kept per indexed module (nginx and libc).
func BenchmarkModuleMemory(b *testing.B) {
	caps := captureStacks(b, 1)
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		u := stacks.NewUnwinder("")
		st := u.Unwind(caps[0])
		runtime.GC()
		runtime.ReadMemStats(&after)
		modules := map[string]bool{}
		for _, f := range st.Frames {
			modules[f.Module] = true
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(modules))/1024, "KiB/module")
		u.Close()
	}
}
