package otelcoltest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Options say how Start starts the Collector.
type Options struct {
	// Down reserves the ports and the file but starts nothing: the
	// Collector is down until Up.
	Down bool
}

// Collector is a test Collector: a process that may be stopped and
// started again on the same ports, appending to the same file. Its
// methods that take no testing.TB fail the test given to Start, so call
// them from the test's goroutine.
type Collector struct {
	t                  testing.TB
	bin                string
	dir                string
	grpcPort, httpPort int

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error
	starts  int
}

// Start builds (or finds) the Collector and starts it on two free
// loopback ports, OTLP/gRPC and OTLP/HTTP; it returns once both accept
// connections. t.Cleanup kills it.
func Start(t testing.TB, opts Options) *Collector {
	t.Helper()
	c := &Collector{
		t:        t,
		bin:      Build(t),
		dir:      t.TempDir(),
		grpcPort: nginxtest.FreePort(t),
		httpPort: nginxtest.FreePort(t),
	}
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jsonlines:
    path: %s
  jsonlines/metrics:
    path: %s
service:
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [jsonlines]
    metrics:
      receivers: [otlp]
      exporters: [jsonlines/metrics]
`, c.grpcPort, c.httpPort, strconv.Quote(c.File()), strconv.Quote(c.MetricsFile()))
	if err := os.WriteFile(c.configPath(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.signal(syscall.SIGKILL) })
	if !opts.Down {
		c.Up()
	}
	return c
}

func (c *Collector) configPath() string { return filepath.Join(c.dir, "config.yaml") }

// File is where the Collector writes what it receives, one JSON line per
// log record.
func (c *Collector) File() string { return filepath.Join(c.dir, "records.jsonl") }

// MetricsFile is where the Collector writes the metrics it receives, one
// JSON line per request (OTLP/JSON ExportMetricsServiceRequest).
func (c *Collector) MetricsFile() string { return filepath.Join(c.dir, "metrics.jsonl") }

// Dir is the Collector's directory: config.yaml, records.jsonl,
// metrics.jsonl and collector.log.
func (c *Collector) Dir() string { return c.dir }

// Endpoint is the OTLP/gRPC address, 127.0.0.1:PORT.
func (c *Collector) Endpoint() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.grpcPort)) }

// HTTPEndpoint is the OTLP/HTTP base URL, http://127.0.0.1:PORT (logs go
// to /v1/logs under it).
func (c *Collector) HTTPEndpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.httpPort))
}

// Log is what the Collector wrote to stderr, every run of it.
func (c *Collector) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "collector.log"))
	return string(b)
}

// Running says whether the Collector process runs.
func (c *Collector) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Up starts the Collector (again), on the same ports and file, and
// returns once both ports accept connections.
func (c *Collector) Up() {
	c.t.Helper()
	if c.Running() {
		c.t.Fatalf("otelcoltest: Up: the collector runs already")
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "collector.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- otelcoltest: start %d at %s\n", c.starts+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "--config", c.configPath())
	cmd.Dir = c.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("otelcoltest: start %s: %v", c.bin, err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.done, c.waitErr = cmd, done, nil
	c.starts++
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			c.mu.Lock()
			err := c.waitErr
			c.mu.Unlock()
			c.t.Fatalf("otelcoltest: the collector exited during start: %v\n%s", err, tail(c.Log(), 30))
		default:
		}
		if listening(c.grpcPort) && listening(c.httpPort) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("otelcoltest: the collector does not listen on %d and %d after %v\n%s", c.grpcPort, c.httpPort, startTimeout, tail(c.Log(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func listening(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Stop shuts the Collector down gracefully (SIGTERM) and waits for it.
func (c *Collector) Stop() {
	c.t.Helper()
	if !c.signal(syscall.SIGTERM) {
		c.t.Fatalf("otelcoltest: the collector did not stop in %v\n%s", stopTimeout, tail(c.Log(), 30))
	}
}

// Kill kills the Collector (SIGKILL), as a crash or an OOM kill would,
// and waits for it.
func (c *Collector) Kill() {
	c.t.Helper()
	if !c.signal(syscall.SIGKILL) {
		c.t.Fatalf("otelcoltest: the collector did not die in %v", stopTimeout)
	}
}

// Pause stops the Collector (SIGSTOP): its ports still accept
// connections, the kernel queues requests, and nothing answers them, as
// with a Collector that is overloaded. Resume lets it go on.
//
// It returns once the kernel has stopped the process: a signal is
// delivered asynchronously, and a request sent before the stop takes
// effect would still be answered.
func (c *Collector) Pause() {
	c.t.Helper()
	c.send(syscall.SIGSTOP)
	c.waitState(true)
}

// waitState waits (bounded) until the Collector's process is stopped
// (state T) or, with stopped false, is not.
func (c *Collector) waitState(stopped bool) {
	c.t.Helper()
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			return
		}
		s := string(stat)
		state := ""
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			state = strings.TrimSpace(s[i+1:])
		}
		if strings.HasPrefix(state, "T") == stopped {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("otelcoltest: the collector's process is not %s after %v", map[bool]string{true: "stopped", false: "running"}[stopped], stopTimeout)
}

// Resume continues a paused Collector (SIGCONT).
func (c *Collector) Resume() {
	c.t.Helper()
	c.send(syscall.SIGCONT)
	c.waitState(false)
}

func (c *Collector) send(sig syscall.Signal) {
	c.t.Helper()
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if cmd == nil || !c.Running() {
		c.t.Fatalf("otelcoltest: %v: the collector does not run", sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("otelcoltest: %v: %v", sig, err)
	}
}

// signal sends sig to a running Collector and waits for it to exit
// (SIGKILL after stopTimeout). It reports whether it exited in time.
func (c *Collector) signal(sig syscall.Signal) bool {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}
