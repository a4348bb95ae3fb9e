package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/probeset"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

const (
	soakCycles  = 200 // SIGINT attach/detach runs
	soakKills   = 20  // SIGKILL runs: one after every 10th cycle
	soakReloads = 10  // reloads under an attached ngxprobe: one after every 20th cycle
	// soakBudget bounds the cycles; the test must finish in about 4 min.
	soakBudget = 3*time.Minute + 30*time.Second
	// The load: soakLoadWorkers keep-alive clients, each pausing
	// soakLoadPause between requests: ~1-2k requests/s on 2 cores, which
	// leaves CPU for ngxprobe to start, attach and print.
	soakLoadWorkers = 8
	soakLoadPause   = 3 * time.Millisecond
)

// soakEvents prints an event per request and per read, as the default
// set did before it counted healthy traffic in the kernel: the soak
// wants events flowing while it attaches, kills and reloads.
const soakEvents = `
ngx_http_finalize_request { print("request", rc, status = r->headers_out.status, conn = r->connection->number, eof = r->connection->read->eof) }
ngx_unix_recv%return { print("recv", ret = $retval, size, conn = c->number) }
`

// soakHTTP: location / answers "ok" itself; /proxy/ goes through an
// upstream with keep-alive connections to a second server block of the
// same nginx, which answers "ok" too. The backend sees /b/...
func soakHTTP(front, back int) string {
	return fmt.Sprintf(`
    upstream soak_backend {
        server 127.0.0.1:%[2]d;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:%[1]d;
        location / { return 200 "ok"; }
        location /proxy/ {
            proxy_pass http://soak_backend/b/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:%[2]d;
        location / { return 200 "ok"; }
    }`, front, back)
}

// TestSoakAttachDetachUnderLoad attaches ngxprobe to a loaded nginx and
// detaches it again, hundreds of times, by SIGINT and by SIGKILL, with
// reloads in between, and checks that nginx never notices: no failed
// request, no crashed or respawned worker, and no uprobe left behind.
func TestSoakAttachDetachUnderLoad(t *testing.T) {
	nginxtest.RequireRoot(t)
	requireBpftool(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)

	front, back := nginxtest.FreePort(t), nginxtest.FreePort(t)
	for i := 0; front == back && i < 10; i++ {
		back = nginxtest.FreePort(t)
	}
	s := nginxtest.Start(t, inst, nginxtest.Config{HTTP: soakHTTP(front, back), Workers: 2})
	master := s.MasterPID()
	masterArg := strconv.Itoa(master)
	target := "/proc/" + masterArg + "/exe"
	base := fmt.Sprintf("http://127.0.0.1:%d", front)
	for _, path := range []string{"/", "/proxy/"} {
		if code, body := httpGet(t, base+path); code != 200 || body != "ok" {
			t.Fatalf("GET %s = %d %q before the soak, want 200 \"ok\"", path, code, body)
		}
	}

	// Every worker pid nginx may legitimately have: the first ones and
	// those of each reload. Any other is a respawn after a crash.
	allowed := map[int]bool{}
	for _, pid := range s.WorkerPIDs() {
		allowed[pid] = true
	}
	if len(allowed) != 2 {
		t.Fatalf("want 2 workers, have %v", s.WorkerPIDs())
	}
	checkNginx := func(when string) bool {
		t.Helper()
		if !procAlive(master) {
			t.Errorf("%s: the nginx master %d is gone\n%s", when, master, tailLines(s.ErrorLog(), 30))
			return false
		}
		ws := s.WorkerPIDs()
		ok := len(ws) == 2
		for _, pid := range ws {
			if !allowed[pid] {
				ok = false
			}
		}
		if !ok {
			t.Errorf("%s: workers %v, want 2 of the known ones %v (a worker died and was respawned?)\n%s",
				when, ws, sortedKeys(allowed), tailLines(s.ErrorLog(), 30))
		}
		return ok
	}

	load := startSoakLoad(base, []string{"/", "/proxy/"}, "ok", soakLoadWorkers, soakLoadPause, soakBudget+time.Minute)
	defer load.stop(t) // before the cleanups stop nginx and any ngxprobe
	start := time.Now()
	time.Sleep(300 * time.Millisecond)
	if load.requests.Load() == 0 {
		t.Fatalf("the load generator got no answer in 300 ms: %q", load.errorSamples())
	}

	var (
		dead                   []int // every ngxprobe pid we ran
		cycles, kills, reloads int
		events, hits           uint64
		attachTimes            []time.Duration
		reloadEventWaits       []time.Duration
		firstFailure           string
		budgetExceeded         bool
		leftoverRuns           int
	)
	attach := func(phase string) (*proc, *soakSink) {
		t.Helper()
		load.setPhase(phase)
		t0 := time.Now()
		p, sink := startSoakProbe(t, "run", "-p", masterArg, "-o", "json", "-e", soakEvents)
		attachTimes = append(attachTimes, time.Since(t0))
		dead = append(dead, p.pid())
		return p, sink
	}
	// Leftovers are checked after every run, not only every 10th: a look
	// with bpftool takes ~20 ms.
	leftovers := func(p *proc) {
		t.Helper()
		leftoverRuns++
		checkNoLeftovers(t, []int{p.pid()}, []string{target})
	}
	failed := func(what string) bool {
		if t.Failed() && firstFailure == "" {
			firstFailure = what
		}
		return t.Failed()
	}

	// One SIGINT run: attached, traced for 50-100 ms, stopped, exit 0.
	detachCycle := func(i int) {
		p, sink := attach(fmt.Sprintf("attach/detach cycle %d", i))
		time.Sleep(time.Duration(50+(i*37)%51) * time.Millisecond)
		load.setPhase(fmt.Sprintf("detach of cycle %d", i))
		stopProbeOK(t, p)
		sum := soakSummary(t, p, sink)
		events += sum.Events
		hits += sum.Hits
		leftovers(p)
		cycles++
	}
	// One SIGKILL run: attached, killed after 0-80 ms, nothing left.
	killCycle := func(k int) {
		p, _ := attach(fmt.Sprintf("kill run %d", k))
		time.Sleep(time.Duration((k*29)%81) * time.Millisecond)
		load.setPhase(fmt.Sprintf("SIGKILL of kill run %d", k))
		if p.exited() {
			t.Errorf("kill run %d: ngxprobe exited (status %d) before the SIGKILL: %s", k, p.exitCode(), p)
		}
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		p.wait(t, stopTimeout)
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("kill run %d: ngxprobe ended with %v, want killed by SIGKILL: %s", k, p.cmd.ProcessState, p)
		}
		leftovers(p)
		kills++
	}
	// One reload under an attached ngxprobe: events from the old workers
	// before, from the new ones after.
	waitPID := func(sink *soakSink, p *proc, pids []int) (int, bool) {
		deadline := time.Now().Add(eventTimeout)
		for {
			if pid, ok := sink.sawAny(pids); ok {
				return pid, true
			}
			if p.exited() || time.Now().After(deadline) {
				return 0, false
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	reloadCycle := func(r int) {
		p, sink := attach(fmt.Sprintf("reload run %d (attached)", r))
		old := s.WorkerPIDs()
		if _, ok := waitPID(sink, p, old); !ok {
			t.Errorf("reload run %d: no event from the workers %v before the reload within %v (pids seen %v): %s",
				r, old, eventTimeout, sink.pidList(), p)
		}
		load.setPhase(fmt.Sprintf("reload %d", r))
		s.Reload(t)
		fresh := s.WorkerPIDs()
		for _, pid := range fresh {
			if pidIn(pid, old) {
				t.Errorf("reload %d: worker %d survived (old %v, new %v)", r, pid, old, fresh)
			}
			allowed[pid] = true
		}
		load.setPhase(fmt.Sprintf("reload run %d (after reload %d)", r, r))
		t0 := time.Now()
		if pid, ok := waitPID(sink, p, fresh); !ok {
			t.Errorf("reload %d: the attached ngxprobe saw no event from the new workers %v within %v (old %v, pids seen %v): %s",
				r, fresh, eventTimeout, old, sink.pidList(), p)
		} else if !pidIn(pid, fresh) {
			t.Errorf("reload %d: event pid %d is not a new worker %v", r, pid, fresh)
		}
		reloadEventWaits = append(reloadEventWaits, time.Since(t0))
		stopProbeOK(t, p)
		sum := soakSummary(t, p, sink)
		events += sum.Events
		hits += sum.Hits
		leftovers(p)
		reloads++
	}

	for i := 0; i < soakCycles; i++ {
		if time.Since(start) > soakBudget {
			budgetExceeded = true
			break
		}
		detachCycle(i)
		if failed(fmt.Sprintf("attach/detach cycle %d", i)) {
			break
		}
		if i%10 == 9 && kills < soakKills {
			killCycle(kills)
			if failed(fmt.Sprintf("kill run %d", kills)) {
				break
			}
		}
		if i%20 == 19 && reloads < soakReloads {
			reloadCycle(reloads)
			if failed(fmt.Sprintf("reload run %d", reloads)) {
				break
			}
		}
		// nginx itself, every cycle (a /proc scan).
		checkNginx(fmt.Sprintf("after cycle %d", i))
		if failed(fmt.Sprintf("the nginx check after cycle %d", i)) {
			break
		}
	}
	load.setPhase("the end")
	// Keep the load on a moment after the last detach: a worker crashing
	// on a stale int3 would do it on the next requests.
	time.Sleep(300 * time.Millisecond)
	load.stop(t)
	duration := time.Since(start)

	requests, errs := load.requests.Load(), load.errors.Load()
	t.Logf("soak summary: cycles %d/%d, kills %d/%d, reloads %d/%d, requests %d (/ %d, /proxy/ %d), errors %d, duration %v, ngxprobe events %d, hits %d, leftover checks %d",
		cycles, soakCycles, kills, soakKills, reloads, soakReloads, requests, load.perPath[0].Load(), load.perPath[1].Load(),
		errs, duration.Round(time.Millisecond), events, hits, leftoverRuns)
	t.Logf("ngxprobe start to \"attached\": %s; first event of new workers after a reload: %s",
		durStats(attachTimes), durStats(reloadEventWaits))
	if firstFailure != "" {
		t.Errorf("stopped at the first failure, in %s", firstFailure)
	}
	if budgetExceeded {
		t.Errorf("the soak took longer than its budget %v: only %d cycles, %d kills, %d reloads done", soakBudget, cycles, kills, reloads)
	}

	// No failed or reset request.
	if errs != 0 {
		t.Errorf("%d of %d requests failed; the first ones:\n  %s", errs, requests+errs, strings.Join(load.errorSamples(), "\n  "))
	}

	// nginx: the same master, the original or reloaded workers, nothing
	// bad in the error log.
	checkNginx("at the end")
	if b, err := os.ReadFile(filepath.Join(s.Dir(), "nginx.pid")); err != nil || strings.TrimSpace(string(b)) != masterArg {
		t.Errorf("nginx.pid = %q (%v), want the master %d", b, err, master)
	}
	if title := soakProcTitle(master); !strings.HasPrefix(title, "nginx: master process") {
		t.Errorf("pid %d is %q, want the nginx master", master, title)
	}
	errorLog := s.ErrorLog()
	if bad := soakBadErrorLog.FindAllString(errorLog, 20); len(bad) > 0 {
		t.Errorf("nginx error log has %d bad lines:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	t.Logf("nginx error log: %d lines, %d [error], %d \"exited with code 0\"", strings.Count(errorLog, "\n"),
		strings.Count(errorLog, "[error]"), strings.Count(errorLog, "exited with code 0"))

	// The access log: every request logged once with 200, by a known worker.
	// (Plus the two requests made before the load: one / and one /proxy/.)
	checkSoakAccessLog(t, s, requests+2, load.perPath[1].Load()+1, allowed)

	// Nothing left of any ngxprobe run, on the target or by pid. A pid
	// that runs again (pid_max wrapped) can't be told apart, so it is
	// left out; the check on the target still covers its uprobes.
	var gone []int
	for _, pid := range dead {
		if !alive(pid) {
			gone = append(gone, pid)
		}
	}
	if len(gone) < len(dead) {
		t.Logf("%d of %d ngxprobe pids are in use again, not checked by pid", len(dead)-len(gone), len(dead))
	}
	checkNoLeftovers(t, gone, []string{target})
}

// checkSoakAccessLog: the front server logged exactly the requests the
// clients counted as answered, the backend exactly the proxied ones, every
// line with 200 (no 499, no 5xx) and from a worker in allowed.
func checkSoakAccessLog(t *testing.T, s *nginxtest.Server, requests, proxied int64, allowed map[int]bool) {
	t.Helper()
	var entries []nginxtest.AccessEntry
	var frontN, backN int64
	// Wait (bounded) for the log lines of the last answered requests.
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries = s.AccessEntries()
		frontN, backN = 0, 0
		for _, e := range entries {
			if strings.HasPrefix(e.Request, "GET /b/") {
				backN++
			} else {
				frontN++
			}
		}
		if (frontN >= requests && backN >= proxied) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	statuses := map[int]int{}
	var badPIDs []string
	for _, e := range entries {
		statuses[e.Status]++
		if !allowed[e.PID] && len(badPIDs) < 10 {
			badPIDs = append(badPIDs, fmt.Sprintf("pid %d: %d %q", e.PID, e.Status, e.Request))
		}
	}
	t.Logf("access log: %d lines, front %d, backend %d, statuses %v", len(entries), frontN, backN, statuses)
	for status, n := range statuses {
		if status != 200 {
			t.Errorf("access log: %d requests with status %d, want 200 only", n, status)
		}
	}
	if len(badPIDs) > 0 {
		t.Errorf("access log: requests served by a worker that is neither an original nor a reloaded one:\n  %s", strings.Join(badPIDs, "\n  "))
	}
	// Equality: a request nginx logged but the client never counted (a
	// reset, a client timeout) fails as much as one answered but unlogged.
	if frontN != requests {
		t.Errorf("access log: %d front requests, the clients counted %d answered ones", frontN, requests)
	}
	if backN != proxied {
		t.Errorf("access log: %d backend requests, the clients counted %d answered /proxy/ ones", backN, proxied)
	}
}

// TestRepeatedAttachMemory attaches the default probe set to a running
// nginx and closes the session 100 times in this process: after the first
// 10 cycles, neither the open fds nor the Go heap may keep growing.
func TestRepeatedAttachMemory(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 2, "")
	addr := strings.TrimPrefix(base, "http://")
	master := s.MasterPID()
	path := "/proc/" + strconv.Itoa(master) + "/exe"

	bin, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	// The default set (its @healthy aggregation: each session must get a
	// map of its own) and an event per request.
	parsed, err := script.ParseText(probeset.DefaultName, probeset.Default+soakEvents, nil)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := script.Compile(symbols.NewImage(bin), parsed)
	if err != nil {
		t.Fatal(err)
	}

	const cycles, warmup = 100, 10
	const maxHeapGrowth = 2 << 20
	var (
		events     int
		noEvent    []int
		attachDurs []time.Duration
		closeDurs  []time.Duration
		heap10     uint64
		fds10      map[string]string
	)
	cycle := func(i int) {
		t0 := time.Now()
		sess, err := probes.Attach(path, resolved.Probes, probes.Options{PID: master, Children: true})
		if err != nil {
			t.Fatalf("cycle %d: attach: %v", i, err)
		}
		attachDurs = append(attachDurs, time.Since(t0))
		soakRawGet(t, addr)
		// What the request produced: read until the ring is empty for
		// 100 ms (bounded by a count as well).
		n := 0
		for ; n < 1000; n++ {
			sess.SetDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := sess.Read(); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("cycle %d: read: %v", i, err)
				}
				break
			}
		}
		events += n
		if n == 0 {
			noEvent = append(noEvent, i)
		}
		t1 := time.Now()
		if err := sess.Close(); err != nil {
			t.Errorf("cycle %d: close: %v", i, err)
		}
		closeDurs = append(closeDurs, time.Since(t1))
		if err := sess.Close(); err != nil {
			t.Errorf("cycle %d: second close: %v", i, err)
		}
	}
	measure := func() (uint64, map[string]string) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, openFDs(t)
	}

	start := time.Now()
	for i := 1; i <= cycles; i++ {
		cycle(i)
		if t.Failed() {
			t.Fatalf("stopped after cycle %d", i)
		}
		if i == warmup {
			heap10, fds10 = measure()
		}
	}
	heap100, fds100 := measure()
	growth := int64(heap100) - int64(heap10)
	t.Logf("%d attach/close cycles in %v; attach %s; close %s; %d events read",
		cycles, time.Since(start).Round(time.Millisecond), durStats(attachDurs), durStats(closeDurs), events)
	t.Logf("after cycle %d: heap %d B, %d fds; after cycle %d: heap %d B, %d fds; heap growth %+d B, fd growth %+d",
		warmup, heap10, len(fds10), cycles, heap100, len(fds100), growth, len(fds100)-len(fds10))
	if len(noEvent) > 0 {
		t.Errorf("cycles %v read no event for their request: attach did not trace", noEvent)
	}
	var leaked []string
	for fd, target := range fds100 {
		if fds10[fd] != target {
			leaked = append(leaked, fd+" -> "+target)
		}
	}
	sort.Strings(leaked)
	if len(fds100) > len(fds10) || len(leaked) > 0 {
		t.Errorf("open fds grew from %d after cycle %d to %d after cycle %d; new or changed:\n  %s",
			len(fds10), warmup, len(fds100), cycles, strings.Join(leaked, "\n  "))
	}
	if growth >= maxHeapGrowth {
		t.Errorf("Go heap grew by %d bytes between cycle %d and %d, want < %d", growth, warmup, cycles, maxHeapGrowth)
	}
	checkNoLeftovers(t, nil, []string{path})
	checkServes(t, base)
}

// soakRawGet makes one HTTP/1.0 request on a connection it closes itself,
// so no fd outlives the call (unlike an http.Transport's).
func soakRawGet(t testing.TB, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /memory HTTP/1.0\r\nHost: soak\r\n\r\n"); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") {
		t.Fatalf("GET /memory: %q", b)
	}
}

func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("n %d, min %v, median %v, p95 %v, max %v", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)*95/100]), r(s[len(s)-1]))
}

func sortedKeys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// soakProcTitle is /proc/pid/cmdline with NULs as spaces.
func soakProcTitle(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}
