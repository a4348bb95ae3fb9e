package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// attachLine is the attach summary's time.
var attachLine = regexp.MustCompile(`ngxprobe: attached \d+ probes to .* in (\d+) ms`)

// fetchLine is the debuginfod client's last progress line of a file; the
// first is the executable's, which is opened first.
var fetchLine = regexp.MustCompile(`fetched debuginfo of \S+ \(build-id \w+\): ([\d.]+) MiB in (\S+) `)

// ngxprobeBinary builds ngxprobe once for the benchmark.
func ngxprobeBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "ngxprobe")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/ngxprobe/ngxprobe/cmd/ngxprobe").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// attachOnce runs the default set on the master until it has attached,
// reads its RSS once the modules are indexed, stops it, and returns the
// attach time it reported, its RSS in KiB, and its stderr.
func attachOnce(b *testing.B, ngxprobe string, master int, env []string) (time.Duration, int, string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ngxprobe, "run", "-p", strconv.Itoa(master), "--stack", "-o", "json")
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(stderr.String(), "stacks ready") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rss := vmRSS(cmd.Process.Pid)
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	m := attachLine.FindStringSubmatch(stderr.String())
	if m == nil {
		b.Fatalf("no attach time in:\n%s", stderr.String())
	}
	ms, _ := strconv.Atoi(m[1])
	return time.Duration(ms) * time.Millisecond, rss, stderr.String()
}

// vmRSS is a process's resident set in KiB.
func vmRSS(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// BenchmarkPackagedAttach: attach time of the default set plus --stack on
// Debian's packaged nginx (stripped, stream module loaded), with its debug
// info from a local debuginfod (cold cache, then warm), against the same
// on our own build with embedded DWARF; and ngxprobe's RSS once every
// module is indexed.
//
//	go test ./bench -run '^$' -bench PackagedAttach -benchtime 3x
func BenchmarkPackagedAttach(b *testing.B) {
	nginxtest.RequireRoot(b)
	build := nginxtest.BuildDeb(b)
	nginxtest.InstallDebs(b, build, "nginx", "nginx-common", "libnginx-mod-stream")
	nginxtest.RemoveDebs(b, "nginx-dbgsym", "libnginx-mod-stream-dbgsym")
	d := nginxtest.StartDebuginfod(b, build.Dir)
	ngxprobe := ngxprobeBinary(b)
	stream := func() nginxtest.Config {
		return nginxtest.Config{
			HTTP:   fmt.Sprintf("server { listen 127.0.0.1:%d; location / { return 200; } }", nginxtest.FreePort(b)),
			Stream: fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass 127.0.0.1:9; }", nginxtest.FreePort(b)),
		}
	}
	pcfg := stream()
	pcfg.Modules = []string{"ngx_stream_module"}
	packaged := nginxtest.StartPackaged(b, pcfg)
	own := nginxtest.Start(b, nginxtest.Build(b, nginxtest.VariantO2), stream())

	var cold, warm, embedded time.Duration
	var rssPackaged, rssOwn int
	var mib float64
	var fetch string
	for i := 0; i < b.N; i++ {
		env := []string{"DEBUGINFOD_URLS=" + d.URL, "DEBUGINFOD_CACHE_PATH=" + b.TempDir()}
		t, _, stderr := attachOnce(b, ngxprobe, packaged.MasterPID(), env)
		cold += t
		if m := fetchLine.FindStringSubmatch(stderr); m != nil {
			mib, _ = strconv.ParseFloat(m[1], 64)
			fetch = m[2]
		}
		t, rss, _ := attachOnce(b, ngxprobe, packaged.MasterPID(), env)
		warm += t
		rssPackaged += rss
		t, rss, _ = attachOnce(b, ngxprobe, own.MasterPID(), nil)
		embedded += t
		rssOwn += rss
	}
	n := float64(b.N)
	b.ReportMetric(float64(cold.Milliseconds())/n, "cold-ms")
	b.ReportMetric(float64(warm.Milliseconds())/n, "warm-ms")
	b.ReportMetric(float64(embedded.Milliseconds())/n, "embedded-ms")
	b.ReportMetric(float64(rssPackaged)/n/1024, "packaged-RSS-MiB")
	b.ReportMetric(float64(rssOwn)/n/1024, "own-RSS-MiB")
	b.ReportMetric(mib, "download-MiB")
	b.Logf("nginx's debug info: %.1f MiB from debuginfod in %s (last cold run)", mib, fetch)
}
