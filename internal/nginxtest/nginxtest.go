package nginxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// Variants that build-nginx.sh knows.
const (
	VariantO2  = "o2"
	VariantLTO = "lto"
)

// AccessLogFormat is the log_format of the access log Start configures:
// $connection is the same number as the "*N" of the error log lines.
const AccessLogFormat = `$connection $status $body_bytes_sent $pid $request_time "$request"`

const (
	startTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
	buildTimeout = 30 * time.Minute
)

// RequireRoot skips the test when the process is not root (uprobes, nginx
// with "user root", apt-get), or fails it when CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		testenv.SkipOrFail(t, "nginxtest needs Linux, have %s", runtime.GOOS)
	}
	testenv.RequireRoot(t)
}

// Install is one built nginx.
type Install struct {
	Variant   string // "o2" or "lto"; "deb" for PackagedInstall
	Prefix    string // install prefix (--prefix), holds sbin/nginx
	Binary    string // Prefix/sbin/nginx, unstripped, with DWARF
	SourceDir string // the configured and built source tree (src/, objs/)
}

type buildResult struct {
	once sync.Once
	inst Install
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

// Build runs build-nginx.sh for the variant ("o2" or "lto") and returns the
// install. The script caches builds on disk; Build also remembers the result
// for the rest of the process. When the build can't be made the test is
// skipped (failed when CI=true).
func Build(t testing.TB, variant string) Install {
	t.Helper()
	if variant != VariantO2 && variant != VariantLTO {
		t.Fatalf("nginxtest.Build: unknown variant %q (want %q or %q)", variant, VariantO2, VariantLTO)
	}
	buildsMu.Lock()
	r, ok := builds[variant]
	if !ok {
		r = &buildResult{}
		builds[variant] = r
	}
	buildsMu.Unlock()

	r.once.Do(func() {
		start := time.Now()
		r.inst, r.err = runBuild(variant)
		if r.err == nil {
			t.Logf("nginxtest: nginx %s ready in %v: %s", variant, time.Since(start).Round(time.Millisecond), r.inst.Binary)
		}
	})
	if r.err != nil {
		testenv.SkipOrFail(t, "nginxtest: can't build nginx %s: %v", variant, r.err)
	}
	return r.inst
}

// BuildScript returns the path of build-nginx.sh: $NGXPROBE_BUILD_NGINX, or
// the one beside this source file, or internal/nginxtest/build-nginx.sh in
// the module root found above the working directory.
func BuildScript() (string, error) {
	if p := os.Getenv("NGXPROBE_BUILD_NGINX"); p != "" {
		return p, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "build-nginx.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "internal", "nginxtest", "build-nginx.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("build-nginx.sh not found (set NGXPROBE_BUILD_NGINX)")
		}
		dir = parent
	}
}

func runBuild(variant string) (Install, error) {
	script, err := BuildScript()
	if err != nil {
		return Install{}, err
	}
	prefix, err := runScript(script, "install prefix", 40, variant)
	if err != nil {
		return Install{}, err
	}
	inst := Install{
		Variant: variant,
		Prefix:  prefix,
		Binary:  filepath.Join(prefix, "sbin", "nginx"),
	}
	if _, err := os.Stat(inst.Binary); err != nil {
		return Install{}, err
	}
	src, err := os.ReadFile(filepath.Join(prefix, "SOURCE_DIR"))
	if err != nil {
		return Install{}, err
	}
	inst.SourceDir = strings.TrimSpace(string(src))
	return inst, nil
}

// runScript runs a build script with bash and returns the absolute path
// (what it is) that it prints as its last line on stdout. A failure's error
// holds the last tailLines lines of its stderr.
func runScript(script, what string, tailLines int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	name := strings.Join(append([]string{script}, args...), " ")
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", name, err, tail(stderr.String(), tailLines))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" || !filepath.IsAbs(last) {
		return "", fmt.Errorf("%s: no %s on stdout (got %q)", name, what, stdout.String())
	}
	return last, nil
}

// Config is what Start puts in nginx.conf.
type Config struct {
	// HTTP is the body of the http{} block: server{} blocks and any other
	// http-level directives. The log_format, access_log and *_temp_path
	// directives are already set (see AccessLogFormat).
	HTTP string
	// Stream, when not empty, is the body of a stream{} block.
	Stream string
	// Main holds extra main-context directives (e.g. "thread_pool ...;").
	Main string
	// Workers is worker_processes; 0 means 1.
	Workers int
	// Modules are dynamic modules to load (load_module, before Main and
	// the blocks): a path, or a bare name such as "ngx_stream_module" for
	// PackagedModulesDir/ngx_stream_module.so of the packaged nginx (see
	// StartPackaged). Build's nginx has its modules built in.
	Modules []string
}

// Server is a running nginx master and its workers.
type Server struct {
	inst    Install
	dir     string
	conf    string
	workers int
	cmd     *exec.Cmd
	done    chan struct{} // closed when the master has exited
	waitErr error

	mu   sync.Mutex
	seen map[int]bool // every worker pid ever seen, to kill at the end
}

func (c Config) render(dir string) string {
	workers := c.Workers
	if workers <= 0 {
		workers = 1
	}
	q := func(name string) string { return strconv.Quote(filepath.Join(dir, name)) }
	var b strings.Builder
	fmt.Fprintf(&b, "# written by nginxtest\n")
	fmt.Fprintf(&b, "user root;\n")
	fmt.Fprintf(&b, "daemon off;\n")
	fmt.Fprintf(&b, "master_process on;\n")
	fmt.Fprintf(&b, "worker_processes %d;\n", workers)
	fmt.Fprintf(&b, "pid %s;\n", q("nginx.pid"))
	fmt.Fprintf(&b, "error_log %s info;\n", q("error.log"))
	for _, m := range c.Modules {
		fmt.Fprintf(&b, "load_module %s;\n", strconv.Quote(modulePath(m)))
	}
	if c.Main != "" {
		fmt.Fprintf(&b, "%s\n", c.Main)
	}
	fmt.Fprintf(&b, "events {\n    worker_connections 1024;\n}\n")
	fmt.Fprintf(&b, "http {\n")
	fmt.Fprintf(&b, "    log_format ngxprobe '%s';\n", AccessLogFormat)
	fmt.Fprintf(&b, "    access_log %s ngxprobe;\n", q("access.log"))
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", d, q(d+"_temp"))
	}
	fmt.Fprintf(&b, "%s\n}\n", c.HTTP)
	if c.Stream != "" {
		fmt.Fprintf(&b, "stream {\n%s\n}\n", c.Stream)
	}
	return b.String()
}

// Start writes nginx.conf into a new t.TempDir() and starts nginx in the
// foreground (daemon off) as a child of the test, master_process on. It
// returns once the master has written its pid file and all its workers run.
// t.Cleanup stops it: SIGQUIT, up to 5 s of grace, then SIGKILL for the
// master and every worker.
func Start(t testing.TB, inst Install, cfg Config) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		inst:    inst,
		dir:     dir,
		conf:    filepath.Join(dir, "nginx.conf"),
		workers: max(cfg.Workers, 1),
		done:    make(chan struct{}),
		seen:    map[int]bool{},
	}
	if err := os.WriteFile(s.conf, []byte(cfg.render(dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "nginx.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	// -p: relative paths (and compiled-in defaults) resolve in dir;
	// -e: the error log used before nginx.conf is read.
	s.cmd = exec.Command(inst.Binary, "-p", dir+"/", "-c", s.conf, "-e", filepath.Join(dir, "error.log"))
	s.cmd.Dir = dir
	s.cmd.Stdout = out
	s.cmd.Stderr = out
	// Own process group: workers inherit it, so the group can be killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("nginxtest: start %s: %v", inst.Binary, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			t.Fatalf("nginxtest: nginx exited during start: %v\n%s", s.waitErr, s.diag())
		default:
		}
		if pid := s.pidFromFile(); pid == s.cmd.Process.Pid && len(s.WorkerPIDs()) >= s.workers {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginxtest: nginx not ready after %v (pid file %d, workers %v)\n%s",
				startTimeout, s.pidFromFile(), s.WorkerPIDs(), s.diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Dir is the server's temp dir: nginx.conf, nginx.pid, error.log,
// access.log, nginx.stderr and the *_temp folders.
func (s *Server) Dir() string { return s.dir }

// Install is the nginx this server runs.
func (s *Server) Install() Install { return s.inst }

// MasterPID is the pid of the nginx master process.
func (s *Server) MasterPID() int { return s.cmd.Process.Pid }

func (s *Server) pidFromFile() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "nginx.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// WorkerPIDs returns the master's current worker processes, read from /proc:
// its children titled "nginx: worker process". Workers of an old generation
// that are shutting down after a reload ("... is shutting down") and the
// cache manager/loader are not included. Sorted ascending.
func (s *Server) WorkerPIDs() []int {
	var pids []int
	for _, pid := range children(s.MasterPID()) {
		if procTitle(pid) == "nginx: worker process" {
			pids = append(pids, pid)
		}
	}
	s.mu.Lock()
	for _, pid := range pids {
		s.seen[pid] = true
	}
	s.mu.Unlock()
	return pids
}

// Reload makes the master re-read nginx.conf (SIGHUP, as `nginx -s reload`)
// and waits until a complete new set of workers runs, none of them from
// before the reload.
func (s *Server) Reload(t testing.TB) {
	t.Helper()
	old := map[int]bool{}
	for _, pid := range s.WorkerPIDs() {
		old[pid] = true
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("nginxtest: reload: %v", err)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		cur := s.WorkerPIDs()
		fresh := 0
		for _, pid := range cur {
			if !old[pid] {
				fresh++
			}
		}
		if fresh >= s.workers && fresh == len(cur) {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("nginxtest: nginx exited during reload: %v\n%s", s.waitErr, s.diag())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginxtest: no new workers %v after reload (old %v)\n%s", cur, old, s.diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ErrorLog returns the contents of the error log ("" if none yet).
func (s *Server) ErrorLog() string { return readFile(filepath.Join(s.dir, "error.log")) }

// AccessLog returns the contents of the access log ("" if none yet), one
// line per request in AccessLogFormat.
func (s *Server) AccessLog() string { return readFile(filepath.Join(s.dir, "access.log")) }

// AccessEntry is one access log line.
type AccessEntry struct {
	Connection    uint64 // $connection, the "*N" of the error log
	Status        int
	BodyBytesSent int64
	PID           int // the worker that served it
	RequestTime   string
	Request       string // e.g. "GET / HTTP/1.1"
}

// AccessEntries parses the access log; lines that don't parse are skipped.
func (s *Server) AccessEntries() []AccessEntry {
	var out []AccessEntry
	for _, line := range strings.Split(s.AccessLog(), "\n") {
		f := strings.SplitN(line, " ", 6)
		if len(f) != 6 {
			continue
		}
		var e AccessEntry
		var err1, err2, err3, err4 error
		e.Connection, err1 = strconv.ParseUint(f[0], 10, 64)
		e.Status, err2 = strconv.Atoi(f[1])
		e.BodyBytesSent, err3 = strconv.ParseInt(f[2], 10, 64)
		e.PID, err4 = strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		e.RequestTime = f[4]
		e.Request = strings.TrimSuffix(strings.TrimPrefix(f[5], `"`), `"`)
		out = append(out, e)
	}
	return out
}

// stop is the t.Cleanup of Start.
func (s *Server) stop(t testing.TB) {
	s.WorkerPIDs() // remember the current workers
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			t.Logf("nginxtest: nginx %d did not quit within %v, killing it", s.MasterPID(), stopTimeout)
		}
	}
	// Whatever is left: the whole process group (master and workers) and
	// any worker seen, should one have left the group.
	_ = syscall.Kill(-s.MasterPID(), syscall.SIGKILL)
	s.mu.Lock()
	for pid := range s.seen {
		if strings.HasPrefix(procTitle(pid), "nginx: worker process") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Errorf("nginxtest: nginx master %d still running after SIGKILL", s.MasterPID())
	}
	if t.Failed() {
		t.Logf("nginxtest: server dir %s\n%s", s.dir, s.diag())
	}
}

// diag is what a failure report shows: nginx's own output and the error log.
func (s *Server) diag() string {
	return fmt.Sprintf("--- nginx stdout/stderr:\n%s--- error.log (tail):\n%s",
		tail(readFile(filepath.Join(s.dir, "nginx.stderr")), 20), tail(s.ErrorLog(), 40))
}

// ephemeralPort asks the kernel for a free port.
func ephemeralPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SlowUpstream starts an HTTP server on 127.0.0.1 that answers every request
// after delay with 200 and "slow upstream\n". It returns its "host:port". A
// request whose client goes away stops waiting. t.Cleanup closes the
// listener and every connection without waiting for the delays.
func SlowUpstream(t testing.TB, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			timer := time.NewTimer(delay)
			defer timer.Stop()
			select {
			case <-timer.C:
				w.Header().Set("Content-Type", "text/plain")
				fmt.Fprint(w, "slow upstream\n")
			case <-r.Context().Done():
				panic(http.ErrAbortHandler)
			case <-stop:
				// Cut the connection; returning would send an empty 200.
				panic(http.ErrAbortHandler)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	srv.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(func() {
		_ = srv.Close() // closes the listener and all connections
		close(stop)
		<-served
	})
	return l.Addr().String()
}

// children returns the pids whose parent is ppid, from /proc/*/stat.
func children(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if p, err := strconv.Atoi(f[1]); err == nil && p == ppid {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// procTitle is the process title from /proc/pid/cmdline ("" if gone): nginx
// overwrites its argv with e.g. "nginx: worker process".
func procTitle(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
