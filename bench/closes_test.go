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

// closesPoints are the functions ngxprobe closes probes on the test
// build, for the empty-uprobe floor; defaultPoints the default run set's.
var (
	closesPoints  = []string{"ngx_http_close_connection", "ngx_http_terminate_request", "ngx_connection_error", "ngx_http_upstream_next", "ngx_log_error_core", "ngx_http_v2_state_rst_stream", "ngx_stream_finalize_session"}
	defaultPoints = []string{"ngx_http_finalize_request", "ngx_unix_recv", "ngx_unix_recv%return", "ngx_http_ssl_handshake"}
)

const closesBench = `
    upstream closes_backend { server 127.0.0.1:%d; keepalive 16; }
    server { listen 127.0.0.1:%d; location / { return 200 "upstream\n"; } }
    server {
        listen 127.0.0.1:%d;
        location /static { return 200 "ok\n"; }
        location /proxy { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://closes_backend; }
    }`

// BenchmarkCloses: nginx throughput under wrk (-t1 -c16, one worker) with
// ngxprobe closes attached, against the baseline, the empty-uprobe floor
// on the points closes uses, one empty uprobe per connection, a kernel
// trigger with no uprobe (bench/ktrigger), closes --stack, closes --all
// (a healthy verdict per connection), the default run
// set, its floor, and bpftrace on the default set's points; keepalive and
// "Connection: close" traffic on /static (return 200) and /proxy (a
// keepalive upstream). The traffic is healthy: closes must cost it almost
// nothing. Variants alternate RUNS times (default 3) for DURATION seconds
// (default 5); each figure is the median; the tracer's own CPU is
// reported per 100k requests.
//
//	go test ./bench -run '^$' -bench Closes -benchtime 1x
func BenchmarkCloses(b *testing.B) {
	nginxtest.RequireRoot(b)
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatalf("wrk: %v", err)
	}
	inst := nginxtest.Build(b, nginxtest.VariantO2)
	ngxprobe := ngxprobeBinary(b)
	empty := emptyprobeBinary(b)
	ktrigger := toolBinary(b, "ktrigger")
	port, uport := nginxtest.FreePort(b), nginxtest.FreePort(b)
	srv := nginxtest.Start(b, inst, nginxtest.Config{HTTP: fmt.Sprintf(closesBench, uport, uport, port)})
	master := strconv.Itoa(srv.MasterPID())
	nginx := inst.Binary
	script := filepath.Join(b.TempDir(), "default.bt")
	gen := exec.Command("bash", "bench/bpftrace-default.sh", nginx)
	gen.Dir = ".."
	gen.Env = append(os.Environ(), "NGXPROBE="+ngxprobe)
	bt, err := gen.Output()
	if err != nil {
		b.Fatalf("bpftrace-default.sh: %v", err)
	}
	if err := os.WriteFile(script, bt, 0o644); err != nil {
		b.Fatal(err)
	}
	runs, duration := 3, 5
	if s := os.Getenv("RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("DURATION"); s != "" {
		duration, _ = strconv.Atoi(s)
	}
	type variant struct {
		name  string
		cmd   func() *exec.Cmd
		ready string
		self  bool // the tracer's CPU is measured
	}
	variants := []variant{
		{name: "baseline"},
		{"floor: empty uprobes on closes' points", func() *exec.Cmd { return exec.Command(empty, append([]string{nginx}, closesPoints...)...) }, "attached", false},
		{"floor: one empty uprobe per connection (ngx_http_close_connection)", func() *exec.Cmd { return exec.Command(empty, nginx, "ngx_http_close_connection") }, "attached", false},
		{"kernel trigger: raw tracepoint sys_exit, worker's tgid", func() *exec.Cmd { return exec.Command(ktrigger, strconv.Itoa(srv.WorkerPIDs()[0])) }, "attached", false},
		{"ngxprobe closes", func() *exec.Cmd { return exec.Command(ngxprobe, "closes", "-p", master, "-o", "json") }, "ngxprobe: stacks ready", true},
		{"ngxprobe closes --stack", func() *exec.Cmd { return exec.Command(ngxprobe, "closes", "--stack", "-p", master, "-o", "json") }, "ngxprobe: stacks ready", true},
		// --all sends an event per connection: what printing every healthy
		// close costs.
		{"ngxprobe closes --all", func() *exec.Cmd { return exec.Command(ngxprobe, "closes", "--all", "-p", master, "-o", "json") }, "ngxprobe: stacks ready", true},
		{"floor: empty uprobes on the default set's points", func() *exec.Cmd { return exec.Command(empty, append([]string{nginx}, defaultPoints...)...) }, "attached", false},
		{"ngxprobe run (default set)", func() *exec.Cmd { return exec.Command(ngxprobe, "run", "-p", master, "-o", "json") }, "ngxprobe: attached", true},
		{"bpftrace, default set's points", func() *exec.Cmd { return exec.Command("bpftrace", script) }, "Attaching", true},
	}
	if _, err := exec.LookPath("bpftrace"); err != nil {
		variants = variants[:len(variants)-1]
	}
	type key struct{ variant, load string }
	rps := map[key][]float64{}
	cpu := map[key][]float64{}
	hits := map[key][]float64{} // probe hits per 100k requests
	loads := []struct{ name, path, header string }{
		{"static keepalive", "/static", ""},
		{"static close", "/static", "Connection: close"},
		{"proxy keepalive", "/proxy", ""},
		{"proxy close", "/proxy", "Connection: close"},
	}
	// VARIANTS and LOADS (regular expressions) run a subset; the baseline
	// always runs.
	if re := os.Getenv("VARIANTS"); re != "" {
		keep := variants[:1]
		for _, v := range variants[1:] {
			if regexp.MustCompile(re).MatchString(v.name) {
				keep = append(keep, v)
			}
		}
		variants = keep
	}
	if re := os.Getenv("LOADS"); re != "" {
		var keep = loads[:0]
		for _, l := range loads {
			if regexp.MustCompile(re).MatchString(l.name) {
				keep = append(keep, l)
			}
		}
		loads = keep
	}
	for i := 0; i < b.N; i++ {
		for range runs {
			for _, l := range loads {
				url := fmt.Sprintf("http://127.0.0.1:%d%s", port, l.path)
				for _, v := range variants {
					k := key{v.name, l.name}
					if v.cmd == nil {
						rps[k] = append(rps[k], wrkFor(b, url, l.header, duration))
						continue
					}
					cmd := v.cmd()
					stop := startAttached(b, cmd, v.ready)
					before := cpuTicks(cmd.Process.Pid)
					r := wrkFor(b, url, l.header, duration)
					rps[k] = append(rps[k], r)
					if v.self {
						secs := float64(cpuTicks(cmd.Process.Pid)-before) / 100
						cpu[k] = append(cpu[k], secs/(r*float64(duration))*100000)
					}
					out := stop()
					if m := regexp.MustCompile(`detached; (\d+) hits|"summary":\{"hits":(\d+)`).FindStringSubmatch(out); m != nil {
						n, _ := strconv.ParseFloat(m[1]+m[2], 64)
						hits[k] = append(hits[k], n/(r*float64(duration))*100000)
					}
				}
			}
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-68s", "variant")
	for _, l := range loads {
		fmt.Fprintf(&table, " %26s", l.name)
	}
	table.WriteString("\n")
	for _, v := range variants {
		fmt.Fprintf(&table, "%-68s", v.name)
		for _, l := range loads {
			base := median(rps[key{"baseline", l.name}])
			r := median(rps[key{v.name, l.name}])
			cell := fmt.Sprintf("%.0f %.3f", r, r/base)
			if c := cpu[key{v.name, l.name}]; len(c) > 0 {
				cell += fmt.Sprintf(" %.2fs", median(c))
			}
			if h := hits[key{v.name, l.name}]; len(h) > 0 {
				cell += fmt.Sprintf(" %.0fh", median(h))
			}
			fmt.Fprintf(&table, " %26s", cell)
			b.ReportMetric(r/base, strings.ReplaceAll(v.name+" "+l.name, " ", "_")+"-retention")
		}
		table.WriteString("\n")
	}
	// Printed, not logged: the test runner cuts long benchmark logs.
	fmt.Printf("%s, wrk -t1 -c16 -d%ds, one worker, medians of %d alternating runs; each cell: requests/s, retention against the baseline, the tracer's own CPU seconds per 100k requests, and ngxprobe's probe hits per 100k requests (h):\n%s\n",
		time.Now().UTC().Format(time.RFC3339), duration, runs, table.String())
}

// wrkFor runs wrk on url with an optional header and returns requests per
// second.
func wrkFor(b *testing.B, url, header string, seconds int) float64 {
	b.Helper()
	args := []string{"-t1", "-c16", fmt.Sprintf("-d%ds", seconds)}
	if header != "" {
		args = append(args, "-H", header)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindSubmatch(out)
	if m == nil || strings.Contains(string(out), "Non-2xx") {
		b.Fatalf("wrk %s: %s", url, out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// toolBinary builds one of the benchmark's commands (bench/NAME).
func toolBinary(b *testing.B, name string) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ngxprobe/ngxprobe/bench/"+name).CombinedOutput()
	if err != nil {
		b.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}
