// Command demo reproduces a 499 on a real nginx and diagnoses it with
// ngxprobe: it builds the test nginx, starts it with a proxied location
// whose upstream answers after 3 s, attaches ngxprobe to the master, lets
// a client give up after 1 s, and explains what ngxprobe printed.
//
//	go run ./internal/demo --ngxprobe ./bin/ngxprobe
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// runner lets the demo use the test harness outside `go test`. Only the
// methods nginxtest calls are implemented; the embedded TB is nil.
type runner struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (r *runner) Helper()                         {}
func (r *runner) Cleanup(f func())                { r.cleanups = append(r.cleanups, f) }
func (r *runner) Failed() bool                    { return r.failed }
func (r *runner) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "  "+format+"\n", args...) }
func (r *runner) Errorf(format string, args ...any) {
	r.failed = true
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}
func (r *runner) Fatal(args ...any)                 { r.die(fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) { r.die(fmt.Sprintf(format, args...)) }
func (r *runner) Skipf(format string, args ...any)  { r.die(fmt.Sprintf(format, args...)) }

func (r *runner) TempDir() string {
	dir, err := os.MkdirTemp("", "ngxprobe-demo-")
	if err != nil {
		r.die(err.Error())
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

func (r *runner) die(msg string) {
	fmt.Fprintf(os.Stderr, "demo: %s\n", msg)
	r.cleanup()
	os.Exit(1)
}

func main() {
	ngxprobe := flag.String("ngxprobe", "bin/ngxprobe", "ngxprobe binary")
	variant := flag.String("variant", nginxtest.VariantO2, "test nginx build: o2 or lto")
	flag.Parse()
	r := &runner{}
	defer r.cleanup()
	if os.Geteuid() != 0 {
		r.die("run as root: attaching uprobes needs CAP_BPF and CAP_PERFMON")
	}

	step("1. Build the test nginx (%s, -g, no frame pointers; cached after the first run)", *variant)
	inst := nginxtest.Build(r, *variant)
	fmt.Println("   ", inst.Binary)

	upstream := nginxtest.SlowUpstream(r, 3*time.Second)
	port := nginxtest.FreePort(r)
	srv := nginxtest.Start(r, inst, nginxtest.Config{HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location /slow { proxy_pass http://%s; }
    }`, port, upstream)})
	step("2. nginx master %d, workers %v, on 127.0.0.1:%d; /slow proxies to an upstream that answers after 3 s", srv.MasterPID(), srv.WorkerPIDs(), port)

	step("3. Attach: ngxprobe run -p %d --stack", srv.MasterPID())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, *ngxprobe, "run", "-p", fmt.Sprint(srv.MasterPID()), "--stack")
	var out strings.Builder
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		r.die(err.Error())
	}
	if err := cmd.Start(); err != nil {
		r.die(err.Error())
	}
	r.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	attached := make(chan bool, 1)
	// stderr has the attach summary before the events and the exit
	// summary after them: step 5 prints them in that order.
	var head, summary strings.Builder
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		into := &head
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "ngxprobe: detached") {
				into = &summary
			}
			into.WriteString("    " + line + "\n")
			if strings.HasPrefix(line, "ngxprobe: attached") {
				attached <- true
			}
		}
		close(attached)
	}()
	select {
	case ok := <-attached:
		if !ok {
			r.die("ngxprobe exited before attaching:\n" + head.String())
		}
	case <-time.After(20 * time.Second):
		r.die("ngxprobe did not attach within 20 s")
	}

	step("4. A client asks for /slow and gives up after 1 s (curl -m 1)")
	client := &http.Client{Timeout: time.Second}
	if resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/slow", port)); err == nil {
		resp.Body.Close()
		fmt.Printf("    the client got %s before it gave up: the upstream was not slow enough\n", resp.Status)
	} else {
		fmt.Println("    the client gave up after 1 s, before the upstream answered, and closed its connection")
	}
	logLine := waitFor(srv.ErrorLog, "client prematurely closed connection", 5*time.Second)

	cmd.Process.Signal(syscall.SIGINT)
	<-stderrDone // all of stderr read: Wait closes the pipe
	cmd.Wait()
	step("5. What ngxprobe printed")
	fmt.Print(head.String())
	fmt.Print(indent(out.String()))
	fmt.Print(summary.String())

	step("6. The error log (info level; silent at the default level)")
	fmt.Println("   ", logLine)

	step("7. Diagnosis")
	diagnose(out.String(), logLine)
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func waitFor(read func() string, needle string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(read(), "\n") {
			if strings.Contains(l, needle) {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "(no line with " + needle + ")"
}

var (
	logConn       = regexp.MustCompile(`\*(\d+) `)
	finalize      = regexp.MustCompile(`(?s)ngx_http_finalize_request pid \d+\n  request: +rc=499 .*?\n  client: +conn=\*(\d+)[^\n]*\n  client read: +eof=(\d) timedout=(\d) error=(\d)`)
	upstreamClose = regexp.MustCompile(`(?s)ngx_close_connection pid \d+\n  close: +conn=\*(\d+) role=upstream.*?stack:.*?(ngx_http_upstream_check_broken_connection)`)
	errNoDiag     = errors.New("no finalize event with rc=499 was printed")
)

func diagnose(out, logLine string) {
	m := finalize.FindStringSubmatch(out)
	if m == nil {
		fmt.Println("   ", errNoDiag)
		os.Exit(1)
	}
	conn, eof, timedout, rdErr := m[1], m[2], m[3], m[4]
	fmt.Printf("    ngx_http_finalize_request ran with rc=499 for connection *%s.\n", conn)
	fmt.Printf("    Its read event says eof=%s timedout=%s error=%s: ", eof, timedout, rdErr)
	if eof == "1" {
		fmt.Println("the client closed its side first (FIN), nginx saw it and")
		fmt.Println("    gave up on the upstream: a 499, not a gateway-initiated close.")
	} else {
		fmt.Println("the client did not close first.")
	}
	if m := upstreamClose.FindStringSubmatch(out); m != nil {
		fmt.Printf("    The upstream connection *%s was closed from %s, as the stack shows:\n", m[1], m[2])
		fmt.Println("    nginx noticed the client's FIN while waiting for the upstream, and closed it.")
	}
	if lm := logConn.FindStringSubmatch(logLine); lm != nil {
		same := "matches"
		if lm[1] != conn {
			same = "does NOT match"
		}
		fmt.Printf("    The error log's *%s %s ngxprobe's conn=*%s: grep the error log for *%s to join them.\n", lm[1], same, conn, conn)
	}
}
