package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/probeset"
)

// BenchmarkPipeline: the tracer's own CPU per delivered event, the
// user-space pipeline (read the ring, decode, format, write), for the
// default set's events as text and as JSON written to /dev/null. A fixed
// number of keepalive requests (REQUESTS, default 20000) is sent while
// ngxprobe run is attached; its CPU from the first request to its exit
// (it drains the ring) is divided by the events it printed.
// PROFILE=PREFIX writes a CPU profile of each run to PREFIX-FORMAT.pprof
// and prints its top functions.
//
//	go test ./bench -run '^$' -bench Pipeline -benchtime 1x
func BenchmarkPipeline(b *testing.B) {
	nginxtest.RequireRoot(b)
	inst := nginxtest.Build(b, nginxtest.VariantO2)
	ngxprobe := ngxprobeBinary(b)
	port := nginxtest.FreePort(b)
	srv := nginxtest.Start(b, inst, nginxtest.Config{HTTP: fmt.Sprintf(`
    server { listen 127.0.0.1:%d; location / { return 200 "ok\n"; } }`, port)})
	requests := 20000
	if s := os.Getenv("REQUESTS"); s != "" {
		requests, _ = strconv.Atoi(s)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for i := 0; i < b.N; i++ {
		for _, format := range []string{"text", "json"} {
			profile := ""
			cmd := exec.Command(ngxprobe, "run", "-p", strconv.Itoa(srv.MasterPID()), "-o", format, "-e", everyEvent())
			if p := os.Getenv("PROFILE"); p != "" {
				profile = p + "-" + format + ".pprof"
				cmd.Env = append(os.Environ(), "NGXPROBE_CPUPROFILE="+profile)
			}
			devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			var stderr headWriter
			stderr.max = 1 << 20
			cmd.Stdout, cmd.Stderr = devnull, &stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			for deadline := time.Now().Add(time.Minute); !regexp.MustCompile("ngxprobe: attached").MatchString(stderr.String()); {
				if time.Now().After(deadline) {
					b.Fatalf("not attached: %s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			before := cpuTicks(cmd.Process.Pid)
			start := time.Now()
			drive(b, url, requests)
			_ = cmd.Process.Signal(os.Interrupt)
			if err := cmd.Wait(); err != nil {
				b.Fatalf("ngxprobe: %v\n%s", err, stderr.String())
			}
			devnull.Close()
			cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() - time.Duration(before)*10*time.Millisecond
			m := regexp.MustCompile(`detached; \d+ hits, (\d+) events|"summary":\{"hits":\d+,"events":(\d+)`).FindStringSubmatch(stderr.String())
			if m == nil {
				b.Fatalf("no summary: %s", stderr.String())
			}
			events, _ := strconv.Atoi(m[1] + m[2])
			if events < requests {
				b.Fatalf("%d events for %d requests: %s", events, requests, stderr.String())
			}
			perEvent := float64(cpu.Nanoseconds()) / float64(events) / 1000
			b.ReportMetric(perEvent, format+"-µs/event")
			b.Logf("-o %s: %d requests in %v, %d events, tracer CPU %v: %.2f µs per event", format, requests, time.Since(start).Round(time.Millisecond), events, cpu.Round(time.Millisecond), perEvent)
			if profile != "" {
				out, _ := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", ngxprobe, profile).CombinedOutput()
				b.Logf("profile (-o %s):\n%s", format, out)
			}
		}
	}
}

// everyEvent is the default set printing every hit, healthy ones
// included (the default set itself counts those in the kernel): the
// events whose user-space cost is measured.
func everyEvent() string {
	var b strings.Builder
	for _, line := range strings.Split(probeset.Default, "\n") {
		if strings.Contains(line, "@healthy") {
			continue
		}
		line = strings.Replace(line, "/ abnormal / ", "", 1)
		line = strings.Replace(line, "/ $retval == 0 || $retval == -1 / ", "", 1)
		b.WriteString(line + "\n")
	}
	return b.String()
}

// drive sends n keepalive GETs over 4 connections.
func drive(b *testing.B, url string, n int) {
	tr := &http.Transport{MaxConnsPerHost: 4, MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}
