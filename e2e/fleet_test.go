package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/target"
)

// --all-nginx: masters in PID and mount namespaces of their own
// (unshare), two running one file, one started after ngxprobe, one
// stopped while it runs.

// nsNginx is an nginx master that runs as pid 1 of its own PID and mount
// namespaces.
type nsNginx struct {
	unshare *exec.Cmd
	master  int // its pid on the host
	port    int
	dir     string
}

// startNamespaced starts binary under unshare --pid --mount --fork: the
// master is pid 1 of its namespace, the child of unshare on the host.
func startNamespaced(t *testing.T, binary string) *nsNginx {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := nginxtest.FreePort(t)
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[2]d;
        location = /close { return 444; }
        location = /ok { return 200 "ok\n"; }
    }
}
`, dir, port)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--pid", "--mount", "--fork", binary, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	n := &nsNginx{unshare: cmd, port: port, dir: dir}
	t.Cleanup(func() { n.stop() })
	deadline := time.Now().Add(10 * time.Second)
	for n.master == 0 || len(target.Children("", n.master)) == 0 {
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx in its namespace did not start: %s", data)
		}
		if kids := target.Children("", cmd.Process.Pid); len(kids) == 1 {
			n.master = kids[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := httpGetMaybe(fmt.Sprintf("http://127.0.0.1:%d/ok", port)); code != 200 {
		t.Fatalf("nginx in its namespace does not serve /ok")
	}
	return n
}

// stop ends the namespace: its pid 1 is the master.
func (n *nsNginx) stop() {
	if n.unshare.Process == nil {
		return
	}
	_ = syscall.Kill(-n.unshare.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = n.unshare.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.unshare.Process.Pid, syscall.SIGKILL)
		<-done
	}
	n.unshare.Process = nil
}

// fleetEvent is an event of --all-nginx -o json.
type fleetEvent struct {
	Function string `json:"function"`
	PID      int    `json:"pid"`
	Nginx    *struct {
		MasterPID int    `json:"master_pid"`
		Binary    string `json:"binary"`
	} `json:"nginx"`
}

func TestAllNginx(t *testing.T) {
	nginxtest.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	build := nginxtest.Build(t, nginxtest.VariantO2)
	shared := privateBinary(t, build).Binary // one file, two masters
	other := privateBinary(t, build).Binary  // the same content, another inode

	a := startNamespaced(t, shared)
	b := startNamespaced(t, shared)
	p := startProbe(t, "run", "--all-nginx", "-o", "json", "-e", `ngx_http_finalize_request / rc == 444 / { print(rc) }`)
	stderr := func() string { return p.stderr.String() }
	if !strings.Contains(stderr(), fmt.Sprintf("masters %d %d)", min(a.master, b.master), max(a.master, b.master))) ||
		strings.Count(stderr(), "ngxprobe: attached 1 probes to") != 1 {
		t.Errorf("the two masters of one file are not attached once, together: %s", p)
	}

	// A master that starts after ngxprobe: attached within 2 s of its start.
	started := time.Now()
	c := startNamespaced(t, other)
	want := fmt.Sprintf("masters %d)", c.master)
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(stderr(), want) }) {
		t.Fatalf("the new master %d was not attached: %s", c.master, p)
	}
	if d := time.Since(started); d > 2*time.Second+3*time.Second {
		t.Errorf("the new master was attached %v after it started (scan every 1 s, plus its attach)", d)
	}
	t.Logf("a master started after ngxprobe was attached %v after nginx started", time.Since(started).Round(time.Millisecond))

	// Each master's 444 comes labelled with that master.
	closeConn := func(n *nsNginx) { httpGetMaybe(fmt.Sprintf("http://127.0.0.1:%d/close", n.port)) }
	seen := func(master int) int {
		count := 0
		for _, ev := range jsonLines[fleetEvent](t, p) {
			if ev.Nginx != nil && ev.Nginx.MasterPID == master {
				count++
			}
		}
		return count
	}
	for _, n := range []*nsNginx{a, b, c} {
		closeConn(n)
		if !waitUntil(eventTimeout, func() bool { return seen(n.master) == 1 }) {
			t.Errorf("no event labelled with master %d: %s", n.master, p)
		}
	}
	for _, ev := range jsonLines[fleetEvent](t, p) {
		if ev.Nginx == nil || ev.Nginx.Binary == "" || ev.Function != "ngx_http_finalize_request" {
			t.Errorf("event %+v: want the finalize with its master and binary", ev)
		}
	}

	// One master of the shared file stops: the file stays attached for
	// the other; when the other stops too, it is detached.
	a.stop()
	if !waitUntil(5*time.Second, func() bool {
		return strings.Contains(stderr(), fmt.Sprintf("nginx master %d (%s) exited", a.master, shared))
	}) {
		t.Errorf("master %d's exit not noticed: %s", a.master, p)
	}
	closeConn(b)
	if !waitUntil(eventTimeout, func() bool { return seen(b.master) == 2 }) {
		t.Errorf("after master %d stopped, master %d of the same file is no longer traced: %s", a.master, b.master, p)
	}
	b.stop()
	if !waitUntil(5*time.Second, func() bool { return strings.Contains(stderr(), "ngxprobe: detached from "+shared) }) {
		t.Errorf("the file of two stopped masters is still attached: %s", p)
	}
	closeConn(c)
	if !waitUntil(eventTimeout, func() bool { return seen(c.master) == 2 }) {
		t.Errorf("master %d is no longer traced: %s", c.master, p)
	}
	stopProbeOK(t, p)
	checkNoPanic(t, p)
	// Each file was attached once and detached once (other nginx on the
	// host are traced too, and are no business of this test).
	for _, bin := range []string{shared, other} {
		if n := strings.Count(stderr(), "ngxprobe: detached from "+bin+" "); n != 1 {
			t.Errorf("%s detached %d times, want once: %s", bin, n, p)
		}
		if n := strings.Count(stderr(), "probes to "+bin+" "); n != 1 {
			t.Errorf("%s attached %d times, want once: %s", bin, n, p)
		}
	}
}

// With -p, the trace ends when the master exits: nothing of it is left,
// and ngxprobe says so and exits cleanly, with its summary.
func TestMasterExitEndsTrace(t *testing.T) {
	nginxtest.RequireRoot(t)
	srv, base := startPlain(t, privateBinary(t, nginxtest.Build(t, nginxtest.VariantO2)), 1, "")
	p := startProbe(t, "run", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
	checkServes(t, base)
	if err := syscall.Kill(srv.MasterPID(), syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("ngxprobe exited with %d after the master did, want 0: %s", code, p)
	}
	if !strings.Contains(p.stderr.String(), fmt.Sprintf("nginx master %d exited; detaching", srv.MasterPID())) || !strings.Contains(p.stderr.String(), `{"summary":`) {
		t.Errorf("no word of the master's exit, or no summary: %s", p)
	}
	checkNoPanic(t, p)
}
