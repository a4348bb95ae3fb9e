package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakSink is the stdout of a long-running ngxprobe -o json under load:
// it parses each event line as it arrives and keeps only counts and the
// pids seen, so that hundreds of runs don't pile up megabytes of JSON.
type soakSink struct {
	mu      sync.Mutex
	partial []byte
	lines   int
	bad     int
	badLine string
	pids    map[int]int // event pid -> events
}

func newSoakSink() *soakSink { return &soakSink{pids: map[int]int{}} }

func (s *soakSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(bytes.TrimSpace(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	// Don't keep the consumed prefix alive.
	s.partial = append([]byte(nil), s.partial...)
	return len(p), nil
}

func (s *soakSink) line(b []byte) {
	if len(b) == 0 {
		return
	}
	var ev struct {
		PID   *int   `json:"pid"`
		Probe string `json:"probe"`
	}
	if bytes.HasPrefix(b, []byte(`{"aggregate"`)) {
		return // printed at exit
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.PID == nil || ev.Probe == "" {
		s.bad++
		if s.badLine == "" {
			s.badLine = string(b)
			if len(s.badLine) > 500 {
				s.badLine = s.badLine[:500] + "..."
			}
		}
		return
	}
	s.lines++
	s.pids[*ev.PID]++
}

// counts is the number of event lines, of lines that are not JSON events,
// the first such line, and what is left after the last newline.
func (s *soakSink) counts() (events, bad int, badLine string, partial int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines, s.bad, s.badLine, len(s.partial)
}

// sawAny reports whether some event came from one of pids.
func (s *soakSink) sawAny(pids []int) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pid := range pids {
		if s.pids[pid] > 0 {
			return pid, true
		}
	}
	return 0, false
}

func (s *soakSink) pidList() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for pid := range s.pids {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// launchSoak is launch with stdout going to a soakSink instead of memory.
func launchSoak(t testing.TB, argv ...string) (*proc, *soakSink) {
	t.Helper()
	sink := newSoakSink()
	return launchTo(t, &proc{}, sink, argv...), sink
}

// startSoakProbe starts ngxprobe ARGS with a soakSink and waits (bounded by
// attachTimeout) for "ngxprobe: attached".
func startSoakProbe(t testing.TB, args ...string) (*proc, *soakSink) {
	t.Helper()
	p, sink := launchSoak(t, ngx(args...)...)
	waitAttached(t, p, 5*time.Millisecond)
	return p, sink
}

// soakSummary checks the exit summary of a run whose stdout went to sink:
// nothing lost, at least one event, and as many event lines as the
// summary counts.
func soakSummary(t testing.TB, p *proc, sink *soakSink) Summary {
	t.Helper()
	s := summary(t, p)
	n, bad, badLine, partial := sink.counts()
	if bad > 0 {
		t.Errorf("ngxprobe pid %d printed %d lines that are not JSON events, the first: %s", p.pid(), bad, badLine)
	}
	if partial > 0 {
		t.Errorf("ngxprobe pid %d: stdout ends with %d bytes of an unterminated line", p.pid(), partial)
	}
	if s.Lost != 0 {
		t.Errorf("ngxprobe pid %d summary: lost = %d, want 0: %+v", p.pid(), s.Lost, s)
	}
	if s.Events == 0 || s.Hits < s.Events {
		t.Errorf("ngxprobe pid %d summary: want hits >= events > 0 under load, have hits %d events %d", p.pid(), s.Hits, s.Events)
	}
	if uint64(n) != s.Events {
		t.Errorf("ngxprobe pid %d summary: events = %d, but %d event lines were printed", p.pid(), s.Events, n)
	}
	return s
}

// soakLoad is a bounded HTTP load generator: workers goroutines share one
// keep-alive transport and request the given paths in turn, each pausing
// pause between requests, until stop (or maxDuration) ends them. Every
// request is counted; a transport error, a status other than 200 or a body
// other than want is an error.
type soakLoad struct {
	want    string
	stopped chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	client  *http.Client

	requests atomic.Int64 // answered 200 with the right body
	errors   atomic.Int64 // everything else
	perPath  []atomic.Int64

	phase atomic.Pointer[string] // what the test is doing, for error reports

	mu      sync.Mutex
	samples []string // the first errors
}

const soakMaxSamples = 20

func startSoakLoad(base string, paths []string, want string, workers int, pause, maxDuration time.Duration) *soakLoad {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	l := &soakLoad{
		want:    want,
		stopped: make(chan struct{}),
		client:  &http.Client{Transport: tr, Timeout: 10 * time.Second},
		perPath: make([]atomic.Int64, len(paths)),
	}
	l.setPhase("start")
	// stop lets every request under way finish (and be counted); ctx only
	// ends requests when maxDuration is up or stop gives up waiting.
	l.ctx, l.cancel = context.WithTimeout(context.Background(), maxDuration)
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stopped:
					return
				case <-l.ctx.Done():
					return
				default:
				}
				k := i % len(paths)
				l.one(base+paths[k]+"?w="+strconv.Itoa(w)+"&i="+strconv.Itoa(i), k)
				if pause > 0 {
					select {
					case <-l.stopped:
					case <-l.ctx.Done():
					case <-time.After(pause):
					}
				}
			}
		}(w)
	}
	return l
}

func (l *soakLoad) setPhase(s string) { l.phase.Store(&s) }

func (l *soakLoad) one(url string, k int) {
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, url, nil)
	if err != nil {
		l.fail(fmt.Sprintf("GET %s: %v", url, err))
		return
	}
	resp, err := l.client.Do(req)
	if err != nil {
		l.fail(fmt.Sprintf("GET %s: %v", url, err))
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch {
	case err != nil:
		l.fail(fmt.Sprintf("GET %s: %s, reading the body: %v", url, resp.Status, err))
	case resp.StatusCode != http.StatusOK || string(body) != l.want:
		l.fail(fmt.Sprintf("GET %s: %s %q, want 200 %q", url, resp.Status, body, l.want))
	default:
		l.requests.Add(1)
		l.perPath[k].Add(1)
	}
}

func (l *soakLoad) fail(msg string) {
	l.errors.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) < soakMaxSamples {
		l.samples = append(l.samples, fmt.Sprintf("%s (during %s)", msg, *l.phase.Load()))
	}
}

// stop ends the load and waits (bounded) for every worker; idempotent.
func (l *soakLoad) stop(t testing.TB) {
	select {
	case <-l.stopped:
		return
	default:
	}
	close(l.stopped)
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("load generator still running 15 s after stop")
	}
	l.cancel()
	l.client.CloseIdleConnections()
}

func (l *soakLoad) errorSamples() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.samples...)
}

// soakBadErrorLog matches error-log lines that mean nginx or one of its
// workers went wrong: a worker killed by a signal (a uprobe's int3 left
// in the text would be SIGTRAP), a worker exiting with a non-zero code,
// and any alert, emergency or critical message.
var soakBadErrorLog = regexp.MustCompile(`(?m)^.*(exited on signal|worker process \d+ exited with (fatal )?code [1-9]|\[alert\]|\[emerg\]|\[crit\]).*$`)

// procAlive reports whether pid runs and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// openFDs lists the process's open fds and what they point to.
func openFDs(t testing.TB) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the fd of the directory read itself, closed by now
		}
		m[e.Name()] = target
	}
	return m
}
