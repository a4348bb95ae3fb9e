package stacks_test

// Stacks of the fixture taken by ngxprobe itself (BPF, so root): the
// probe's capture, the unwinder and the JSON output end to end.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/stacks"
)

const (
	attachTimeout = 15 * time.Second
	eventTimeout  = 10 * time.Second
)

var (
	ngxprobeOnce sync.Once
	ngxprobePath string
	ngxprobeErr  error
)

// ngxprobe builds cmd/ngxprobe once per test binary.
func ngxprobe(t testing.TB) string {
	t.Helper()
	ngxprobeOnce.Do(func() {
		out := filepath.Join(workDir, "ngxprobe")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/ngxprobe/ngxprobe/cmd/ngxprobe")
		if msg, err := cmd.CombinedOutput(); err != nil {
			ngxprobeErr = fmt.Errorf("go build ngxprobe: %v\n%s", err, msg)
			return
		}
		ngxprobePath = out
	})
	if ngxprobeErr != nil {
		t.Fatal(ngxprobeErr)
	}
	return ngxprobePath
}

// lockedBuffer is a bytes.Buffer for one writer goroutine and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// child is a process the test started, in its own process group.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	stdin          *os.File // write end of its stdin, nil if none
	done           chan struct{}
}

// start runs argv; t.Cleanup closes its stdin and kills its process
// group if it still runs then.
func start(t testing.TB, withStdin bool, argv ...string) *child {
	t.Helper()
	c := &child{done: make(chan struct{})}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout = &c.stdout
	c.cmd.Stderr = &c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var r *os.File
	if withStdin {
		var err error
		if r, c.stdin, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		c.cmd.Stdin = r
	}
	err := c.cmd.Start()
	if r != nil {
		r.Close()
	}
	if err != nil {
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		if c.stdin != nil {
			c.stdin.Close()
		}
		select {
		case <-c.done:
			return
		case <-time.After(2 * time.Second): // the fixture exits on stdin EOF
		}
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-c.done:
		case <-time.After(stopTimeout):
			t.Errorf("%s (pid %d) still runs after SIGKILL", argv[0], c.cmd.Process.Pid)
		}
	})
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// interrupt sends SIGINT and waits (bounded) for the exit.
func (c *child) interrupt(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		if code := c.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited with %d after SIGINT\nstderr:\n%s", c.cmd.Path, code, c.stderr.String())
		}
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("%s did not exit within %v of SIGINT; killed it", c.cmd.Path, stopTimeout)
	}
}

// stackEvent is the part of a JSON event these tests read.
type stackEvent struct {
	PID      int           `json:"pid"`
	Probe    string        `json:"probe"`
	Function string        `json:"function"`
	Stack    *stacks.Stack `json:"stack"`
}

// probeFixture runs the fixture (bin DEPTH) and ngxprobe with a stack at
// target and extra flags, and returns the first event with a stack.
func probeFixture(t *testing.T, bin string, depth int, flags ...string) (stackEvent, int) {
	t.Helper()
	testenv.RequireRoot(t)
	ngx := ngxprobe(t)
	fix := start(t, true, bin, fmt.Sprint(depth), "30")
	args := append([]string{ngx, "run", "--binary", bin, "-o", "json", "--probe", "target:stack"}, flags...)
	p := start(t, false, args...)
	deadline := time.Now().Add(attachTimeout)
	for !strings.Contains(p.stderr.String(), "ngxprobe: attached") {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("ngxprobe did not attach (within %v):\n%s", attachTimeout, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ev stackEvent
	deadline = time.Now().Add(eventTimeout)
	for ev.Stack == nil {
		if fix.exited() {
			t.Fatalf("the fixture exited early: %s", fix.stderr.String())
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("no event with a stack within %v\nstderr:\n%s\nstdout:\n%s", eventTimeout, p.stderr.String(), p.stdout.String())
		}
		time.Sleep(50 * time.Millisecond)
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() && ev.Stack == nil {
			var e stackEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Stack != nil {
				ev = e
			}
		}
	}
	p.interrupt(t)
	if se := p.stderr.String(); strings.Contains(se, "panic:") {
		t.Errorf("ngxprobe panicked:\n%s", se)
	}
	if ev.PID != fix.cmd.Process.Pid || ev.Function != "target" {
		t.Errorf("event of pid %d function %q, want pid %d function target", ev.PID, ev.Function, fix.cmd.Process.Pid)
	}
	return ev, fix.cmd.Process.Pid
}

// TestProbeFixtureStack: ngxprobe's stack at target holds every frame,
// exactly: target, the inlined inlined_step marked inlined, leaf, the
// recursion, f12 ... f1, main, libc's start code and _start; with CFI
// from .eh_frame, and from .debug_frame.
func TestProbeFixtureStack(t *testing.T) {
	testenv.RequireRoot(t)
	for _, name := range []string{"deep", "deep-debugframe"} {
		t.Run(name, func(t *testing.T) {
			bin := fixture(t, name)
			const depth = 5
			ev, pid := probeFixture(t, bin, depth)
			checkFullStack(t, *ev.Stack, filepath.Base(bin), depth, libcStart(t, pid))
			if len(ev.Stack.Notes) != 0 {
				t.Errorf("notes %q, want none", ev.Stack.Notes)
			}
		})
	}
}

// TestProbeFixtureTruncated: a recursion far deeper than the copied stack
// (2000 frames of about 80 bytes, 512 or 1024 bytes copied) is marked
// truncated with a reason, and every frame printed is the real one at
// its depth: nothing is made up from whatever lies past the copy.
func TestProbeFixtureTruncated(t *testing.T) {
	testenv.RequireRoot(t)
	const depth = 2000
	bin := fixture(t, "deep")
	for _, n := range []int{512, 1024} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ev, _ := probeFixture(t, bin, depth, "--stack-bytes", fmt.Sprint(n))
			st := *ev.Stack
			t.Logf("--stack-bytes %d:\n%s", n, formatStack(st))
			if !st.Truncated || st.Reason == "" {
				t.Errorf("want a truncated stack with a reason")
			}
			if !strings.Contains(st.Reason, "copied stack") {
				t.Errorf("reason %q, want it to say the copied stack ended", st.Reason)
			}
			got := checkPrefix(t, st, filepath.Base(bin), depth)
			// target, inlined_step, leaf, then recurse frames of 80 bytes:
			// the copy holds at least n/80 - 2 of them.
			if least := 3 + n/80 - 2; got < least {
				t.Errorf("%d frames from %d bytes, want at least %d", got, n, least)
			}
		})
	}
}
