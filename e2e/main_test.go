package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	attachTimeout = 15 * time.Second // ngxprobe start until "ngxprobe: attached"
	stopTimeout   = 10 * time.Second // SIGINT until exit
	runTimeout    = 30 * time.Second // a one-shot run that is expected to fail fast
	eventTimeout  = 10 * time.Second // waiting for an event to show up on stdout
	buildTimeout  = 5 * time.Minute
)

// ngxprobeBin is the ngxprobe binary TestMain builds from this module (or
// copies from $NGXPROBE_BIN when set). Its directory and the binary are
// mode 0755, so an unprivileged user can run it.
var ngxprobeBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ngxprobe-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	ngxprobeBin = filepath.Join(dir, "ngxprobe")
	if prebuilt := os.Getenv("NGXPROBE_BIN"); prebuilt != "" {
		// Test a given binary (a release build, another checkout) instead.
		data, err := os.ReadFile(prebuilt)
		if err == nil {
			err = os.WriteFile(ngxprobeBin, data, 0o755)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: NGXPROBE_BIN: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: testing NGXPROBE_BIN=%s\n", prebuilt)
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", ngxprobeBin, "./cmd/ngxprobe")
	build.Dir = root
	// The product is a static binary (the Makefile exports CGO_ENABLED=0):
	// test that one, whichever way go test was started.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building ngxprobe failed: %v\n%s", err, out)
		return 1
	}
	if err := os.Chmod(ngxprobeBin, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// moduleRoot is the directory holding go.mod, above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// proc is a child process (ngxprobe, or ngxprobe under setpriv) with its
// output captured.
type proc struct {
	argv []string
	// env is added to the test's environment (KEY=VALUE), after childEnv.
	env    []string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // from Wait, valid after done
}

// childEnv is the test's environment without what could make ngxprobe
// reach out of the machine (debuginfod).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DEBUGINFOD_URLS=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// launch starts argv, keeping its stdout in memory; t.Cleanup kills it
// (SIGKILL) if it still runs then.
func launch(t testing.TB, argv ...string) *proc {
	t.Helper()
	p := &proc{}
	return launchTo(t, p, &p.stdout, argv...)
}

// launchTo starts argv as p with stdout going to w.
func launchTo(t testing.TB, p *proc, w io.Writer, argv ...string) *proc {
	t.Helper()
	p.argv, p.done = argv, make(chan struct{})
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(childEnv(), p.env...)
	p.cmd.Stdout = w
	p.cmd.Stderr = &p.stderr
	// Own process group (a ^C of go test does not reach it before the
	// cleanup does), and die with the test binary's thread that forked.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			t.Errorf("%s (pid %d) still running after SIGKILL", argv[0], p.pid())
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status; -1 when killed by a signal.
func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

func (p *proc) String() string {
	return fmt.Sprintf("%s\n--- stderr:\n%s--- stdout (tail):\n%s", quoteArgs(p.argv), p.stderr.String(), tailLines(p.stdout.String(), 30))
}

// wait waits up to timeout for the process to exit by itself; on timeout
// it kills it and fails the test.
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode()
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
	}
	t.Fatalf("%s did not exit within %v; killed it\n%s", p.argv[0], timeout, p)
	return -1
}

// stop sends SIGINT and waits (bounded) for the exit; on timeout it kills
// the process and fails the test.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
	}
	return p.wait(t, stopTimeout)
}

// startProbe runs `ngxprobe ARGS...` and waits until it has attached
// ("ngxprobe: attached" on stderr). It fails the test if ngxprobe exits
// first or takes longer than attachTimeout.
func startProbe(t testing.TB, args ...string) *proc {
	t.Helper()
	p := launch(t, append([]string{ngxprobeBin}, args...)...)
	waitAttached(t, p, 20*time.Millisecond)
	return p
}

// waitAttached polls p's stderr for "ngxprobe: attached", failing the test
// if ngxprobe exits first or takes longer than attachTimeout.
func waitAttached(t testing.TB, p *proc, poll time.Duration) {
	t.Helper()
	deadline := time.Now().Add(attachTimeout)
	for !strings.Contains(p.stderr.String(), "ngxprobe: attached") {
		if p.exited() {
			t.Fatalf("ngxprobe exited (status %d) before attaching: %s", p.exitCode(), p)
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(stopTimeout):
			}
			t.Fatalf("ngxprobe not attached after %v: %s", attachTimeout, p)
		}
		time.Sleep(poll)
	}
}

// runProbe runs argv (ngxprobe, possibly behind setpriv) to completion,
// bounded by runTimeout.
func runProbe(t testing.TB, argv ...string) *proc {
	t.Helper()
	return runProbeEnv(t, nil, argv...)
}

// runProbeEnv is runProbe with env (KEY=VALUE) added to the environment.
func runProbeEnv(t testing.TB, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{env: env}
	launchTo(t, p, &p.stdout, argv...)
	p.wait(t, runTimeout)
	return p
}

// startProbeEnv is startProbe with env (KEY=VALUE) added to the
// environment.
func startProbeEnv(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{env: env}
	launchTo(t, p, &p.stdout, append([]string{ngxprobeBin}, args...)...)
	waitAttached(t, p, 20*time.Millisecond)
	return p
}

// ngx is argv for ngxprobe ARGS.
func ngx(args ...string) []string { return append([]string{ngxprobeBin}, args...) }

// checkNoPanic fails when stderr looks like a Go panic or runtime crash.
func checkNoPanic(t testing.TB, p *proc) {
	t.Helper()
	se := p.stderr.String()
	for _, s := range []string{"panic:", "goroutine ", "fatal error:", "SIGSEGV"} {
		if strings.Contains(se, s) {
			t.Errorf("ngxprobe crashed (stderr has %q): %s", s, p)
		}
	}
}

// Event is one JSON event line of ngxprobe -o json.
type Event struct {
	Time     string  `json:"time"`
	PID      int     `json:"pid"`
	TID      int     `json:"tid"`
	Probe    string  `json:"probe"`
	Function string  `json:"function"`
	Values   []Value `json:"values"`
	// Messages are a script's printf lines.
	Messages []string `json:"messages"`
}

// Value is one value of an event.
type Value struct {
	Name     string          `json:"name"`
	Expr     string          `json:"expr"`
	Value    json.RawMessage `json:"value"`
	Readable bool            `json:"readable"`
	Why      string          `json:"why,omitempty"`
	Role     string          `json:"role,omitempty"`
}

// Int is the value as an integer (ok false if it is not a JSON integer).
func (v Value) Int() (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(v.Value)), 10, 64)
	return n, err == nil
}

// Str is the value as a string (ok false if it is not a JSON string).
func (v Value) Str() (string, bool) {
	var s string
	if err := json.Unmarshal(v.Value, &s); err != nil {
		return "", false
	}
	return s, true
}

// ByExpr returns the first value with that expression.
func (e Event) ByExpr(expr string) (Value, bool) {
	for _, v := range e.Values {
		if v.Expr == expr {
			return v, true
		}
	}
	return Value{}, false
}

// ByName returns the value a script named name (print(name = ...)).
func (e Event) ByName(name string) (Value, bool) {
	for _, v := range e.Values {
		if v.Name == name {
			return v, true
		}
	}
	return Value{}, false
}

// IntExpr is the readable integer value of expr.
func (e Event) IntExpr(expr string) (int64, bool) { return readableInt(e.ByExpr(expr)) }

// StrExpr is the readable string value of expr.
func (e Event) StrExpr(expr string) (string, bool) { return readableStr(e.ByExpr(expr)) }

func readableInt(v Value, found bool) (int64, bool) {
	if !found || !v.Readable {
		return 0, false
	}
	return v.Int()
}

func readableStr(v Value, found bool) (string, bool) {
	if !found || !v.Readable {
		return "", false
	}
	return v.Str()
}

func (e Event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// events parses the complete JSON lines ngxprobe has printed so far.
// A line that does not parse fails the test.
func events(t testing.TB, p *proc) []Event { return jsonLines[Event](t, p) }

// jsonLines parses the complete lines ngxprobe has printed so far as T,
// skipping the aggregate lines printed at exit (see aggregates). A line
// that does not parse fails the test.
func jsonLines[T any](t testing.TB, p *proc) []T {
	t.Helper()
	out := p.stdout.String()
	out = out[:strings.LastIndexByte(out, '\n')+1] // a line still being written waits
	var evs []T
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, `{"aggregate"`) {
			continue
		}
		var ev T
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("ngxprobe printed a line that is not a JSON %T: %v\n%s", ev, err, line)
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitEvent polls ngxprobe's output until an event matches (bounded).
func waitEvent(t testing.TB, p *proc, timeout time.Duration, match func(Event) bool) (Event, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, ev := range events(t, p) {
			if match(ev) {
				return ev, true
			}
		}
		if p.exited() || time.Now().After(deadline) {
			return Event{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Summary is the exit summary of ngxprobe -o json (one line on stderr).
type Summary struct {
	Hits   uint64         `json:"hits"`
	Events uint64         `json:"events"`
	Lost   uint64         `json:"lost"`
	Probes []ProbeSummary `json:"probes"`
}

type ProbeSummary struct {
	Probe    string `json:"probe"`
	Function string `json:"function"`
	Hits     uint64 `json:"hits"`
	Events   uint64 `json:"events"`
	Lost     uint64 `json:"lost"`
}

// summary finds the JSON exit summary on stderr; it fails the test when
// there is none.
func summary(t testing.TB, p *proc) Summary {
	t.Helper()
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `{"summary"`) {
			continue
		}
		var s struct {
			Summary *Summary `json:"summary"`
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil || s.Summary == nil {
			t.Fatalf("bad exit summary line %q: %v", line, err)
		}
		return *s.Summary
	}
	t.Fatalf("no JSON exit summary on stderr: %s", p)
	return Summary{}
}

// checkSummary checks the exit summary against what was printed: nothing
// lost, hits >= events > 0, events equal to the event lines, and the
// per-probe rows adding up to the totals.
func checkSummary(t testing.TB, p *proc) Summary {
	t.Helper()
	s := summary(t, p)
	if s.Lost != 0 {
		t.Errorf("summary: lost = %d, want 0: %+v", s.Lost, s)
	}
	if s.Events == 0 || s.Hits < s.Events {
		t.Errorf("summary: want hits >= events > 0, have hits %d events %d", s.Hits, s.Events)
	}
	if n := uint64(len(events(t, p))); n != s.Events {
		t.Errorf("summary: events = %d, but %d event lines were printed", s.Events, n)
	}
	var hits, evs, lost uint64
	for _, ps := range s.Probes {
		hits += ps.Hits
		evs += ps.Events
		lost += ps.Lost
	}
	if hits != s.Hits || evs != s.Events || lost != s.Lost {
		t.Errorf("summary: per-probe rows add up to hits %d events %d lost %d, totals say %d %d %d",
			hits, evs, lost, s.Hits, s.Events, s.Lost)
	}
	return s
}

// stopProbeOK stops ngxprobe with SIGINT and expects exit 0 and no crash.
func stopProbeOK(t testing.TB, p *proc) {
	t.Helper()
	if code := p.stop(t); code != 0 {
		t.Errorf("ngxprobe exited with status %d, want 0: %s", code, p)
	}
	checkNoPanic(t, p)
}

// httpGet makes one request (no keep-alive) and returns status and body.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// plainServer is an http{} body with one server on a free loopback port:
// location / returns 200 "ok\n", plus extra locations.
func plainServer(port int, extra string) string {
	return fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location / { return 200 "ok\n"; }
%s
    }`, port, extra)
}

// startPlain starts nginx with plainServer and returns it and its base URL.
func startPlain(t testing.TB, inst nginxtest.Install, workers int, extra string) (*nginxtest.Server, string) {
	t.Helper()
	port := nginxtest.FreePort(t)
	s := nginxtest.Start(t, inst, nginxtest.Config{HTTP: plainServer(port, extra), Workers: workers})
	return s, fmt.Sprintf("http://127.0.0.1:%d", port)
}

// checkServes makes one request and expects 200 "ok".
func checkServes(t testing.TB, base string) {
	t.Helper()
	code, body := httpGet(t, base+"/still-alive")
	if code != 200 || body != "ok\n" {
		t.Errorf("nginx after the run: GET /still-alive = %d %q, want 200 \"ok\\n\"", code, body)
	}
}

func quoteArgs(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " '\"$>*%;") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func tailLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func pidIn(pid int, set []int) bool {
	for _, p := range set {
		if p == pid {
			return true
		}
	}
	return false
}
