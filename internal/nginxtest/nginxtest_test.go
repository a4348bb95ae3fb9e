package nginxtest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond every 20 ms until it is true or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigRender(t *testing.T) {
	got := Config{
		HTTP:   "server { listen 127.0.0.1:1; }",
		Stream: "server { listen 127.0.0.1:2; return ok; }",
	}.render("/tmp/x")
	for _, want := range []string{
		"user root;", "daemon off;", "master_process on;", "worker_processes 1;",
		`pid "/tmp/x/nginx.pid";`, `error_log "/tmp/x/error.log" info;`,
		`access_log "/tmp/x/access.log" ngxprobe;`, `client_body_temp_path "/tmp/x/client_body_temp";`,
		"$connection $status $body_bytes_sent", "server { listen 127.0.0.1:1; }",
		"stream {\nserver { listen 127.0.0.1:2; return ok; }\n}",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, got)
		}
	}
	if got := (Config{Workers: 3}).render("/d"); !strings.Contains(got, "worker_processes 3;") || strings.Contains(got, "stream") {
		t.Errorf("Workers: 3 / no stream:\n%s", got)
	}
}

// SlowUpstream answers after its delay, and its cleanup returns at once even
// while a request is still waiting.
func TestSlowUpstream(t *testing.T) {
	addr := SlowUpstream(t, 100*time.Millisecond)
	c := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "slow upstream\n" || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("got %d %q after %v", resp.StatusCode, body, time.Since(start))
	}

	// The inner test ends (its cleanups done) long before the hour is up.
	start = time.Now()
	t.Run("cleanup", func(t *testing.T) {
		errc := make(chan error, 1)
		// Registered first, so it runs after SlowUpstream's cleanup, which
		// must have cut the waiting client off.
		t.Cleanup(func() {
			select {
			case err := <-errc:
				if err == nil {
					t.Errorf("request to a closed SlowUpstream succeeded")
				}
			case <-time.After(2 * time.Second):
				t.Errorf("client still waiting after SlowUpstream cleanup")
			}
		})
		addr := SlowUpstream(t, time.Hour)
		go func() {
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + addr + "/")
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		time.Sleep(100 * time.Millisecond)
	})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("SlowUpstream cleanup with a pending request took %v", took)
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
}

// A client that gives up before the upstream answers: nginx logs
// "client prematurely closed connection" at info level and status 499.
func TestClientAbort499(t *testing.T) {
	RequireRoot(t)
	inst := Build(t, VariantO2)
	if _, err := os.Stat(filepath.Join(inst.SourceDir, "src", "os", "unix", "ngx_recv.c")); err != nil {
		t.Fatalf("SourceDir %q: %v", inst.SourceDir, err)
	}

	up := SlowUpstream(t, 3*time.Second)
	port := FreePort(t)
	srv := Start(t, inst, Config{HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://%s;
        }
    }`, port, up)})

	c := &http.Client{Timeout: time.Second}
	start := time.Now()
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/slow", port))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request did not time out: status %d after %v", resp.StatusCode, time.Since(start))
	}
	t.Logf("client gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)

	re := regexp.MustCompile(`(?m)^.*\[info\] \d+#\d+: \*(\d+) .*client prematurely closed connection.*$`)
	var m []string
	if !waitFor(5*time.Second, func() bool { m = re.FindStringSubmatch(srv.ErrorLog()); return m != nil }) {
		t.Fatalf("no 'client prematurely closed connection' info line in error log:\n%s", srv.ErrorLog())
	}
	t.Logf("error log: %s", m[0])
	conn, _ := strconv.ParseUint(m[1], 10, 64)

	var e499 *AccessEntry
	if !waitFor(5*time.Second, func() bool {
		for _, e := range srv.AccessEntries() {
			if e.Status == 499 {
				e499 = &e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no 499 in access log:\n%s", srv.AccessLog())
	}
	t.Logf("access log: %+v", *e499)
	if e499.Connection != conn {
		t.Errorf("access log $connection %d != error log *%d", e499.Connection, conn)
	}
	if e499.Request != "GET /slow HTTP/1.1" {
		t.Errorf("access log request %q", e499.Request)
	}
	if w := srv.WorkerPIDs(); len(w) != 1 || e499.PID != w[0] {
		t.Errorf("access log pid %d, workers %v", e499.PID, w)
	}
}

// Reload replaces every worker and keeps the master; the cleanup then stops
// every process.
func TestReload(t *testing.T) {
	RequireRoot(t)
	inst := Build(t, VariantO2)

	var all []int // every nginx pid of this test, checked after Start's cleanup
	t.Cleanup(func() {
		for _, pid := range all {
			// A zombie or a gone process has no cmdline.
			if title := procTitle(pid); strings.HasPrefix(title, "nginx:") {
				t.Errorf("nginx pid %d (%q) still alive after cleanup", pid, title)
			}
		}
	})

	port := FreePort(t)
	srv := Start(t, inst, Config{Workers: 2, HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location / { return 200 "hello\n"; }
    }`, port)})
	master := srv.MasterPID()
	old := srv.WorkerPIDs()
	all = append(append(all, master), old...)
	if len(old) != 2 {
		t.Fatalf("workers before reload: %v", old)
	}

	get := func() {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello\n" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	get()

	srv.Reload(t)
	cur := srv.WorkerPIDs()
	all = append(all, cur...)
	if srv.MasterPID() != master {
		t.Errorf("master changed: %d -> %d", master, srv.MasterPID())
	}
	if len(cur) != 2 {
		t.Fatalf("workers after reload: %v", cur)
	}
	for _, n := range cur {
		for _, o := range old {
			if n == o {
				t.Fatalf("worker %d survived the reload (old %v, new %v)", n, old, cur)
			}
		}
	}
	// The old generation exits: it has no open connections.
	if !waitFor(5*time.Second, func() bool {
		for _, o := range old {
			if procTitle(o) != "" {
				return false
			}
		}
		return true
	}) {
		t.Errorf("old workers %v still running after reload", old)
	}
	get()
	if !strings.Contains(srv.ErrorLog(), "reconfiguring") {
		t.Errorf("error log has no 'reconfiguring':\n%s", srv.ErrorLog())
	}
}
