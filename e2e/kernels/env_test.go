package kernels

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/internal/vmtest"
)

// guestNginx starts the test nginx in the guest (on 127.0.0.1:8080) and
// sets MASTER and WORKER.
const guestNginx = `
mkdir -p /tmp/ng/logs
cat > /tmp/ng/nginx.conf <<'EOF'
worker_processes 1;
pid /tmp/ng/nginx.pid;
error_log /tmp/ng/logs/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path /tmp/ng/b; proxy_temp_path /tmp/ng/p; fastcgi_temp_path /tmp/ng/f; uwsgi_temp_path /tmp/ng/u; scgi_temp_path /tmp/ng/s;
  server { listen 127.0.0.1:8080; location / { return 200 "ok\n"; } }
}
EOF
%s -p /tmp/ng -c /tmp/ng/nginx.conf
sleep 1
MASTER=$(cat /tmp/ng/nginx.pid)
WORKER=$(pgrep -P $MASTER | head -n 1)
`

// step runs a command in the guest script, its output and status to
// OUT/name.{out,exit}; "&" runs it in the background (waited for by
// wait_step).
func step(name, cmd string) string {
	return fmt.Sprintf("(%s) > $OUT/%s.out 2>&1; echo $? > $OUT/%s.exit\n", cmd, name, name)
}

// TestKernelEnvironment: what a kernel lacks gets a message that names it
// and says what still works. Each case is the real thing in a guest:
// lockdown=confidentiality on the kernel's command line; no kernel BTF
// and no uprobe PMU, each hidden by a bind mount over its sysfs file.
func TestKernelEnvironment(t *testing.T) {
	nginxtest.RequireRoot(t)
	root := moduleRoot(t)
	bins := buildBinaries(t, root)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	var kernel vmtest.Kernel
	for _, k := range vmtest.Kernels(t) {
		if k.Suite == "bookworm" {
			kernel = k
		}
	}
	if kernel.Image == "" {
		testenv.SkipOrFail(t, "the bookworm kernel is not among NGXPROBE_VM_SUITES")
	}
	run := fmt.Sprintf("%s run -o json", bins.ngxprobe)
	cases := []struct {
		name  string
		args  []string // kernel command line
		setup string
		steps string
		check func(t *testing.T, out func(name string) (string, int))
	}{
		{
			name:  "lockdown",
			args:  []string{"lockdown=confidentiality"},
			setup: "mount -t securityfs none /sys/kernel/security 2>/dev/null || true\n",
			steps: step("features", bins.ngxprobe+" features") +
				step("master", run+" -p $MASTER --duration 1s") +
				step("worker", run+" -p $WORKER --duration 1s"),
			check: func(t *testing.T, out func(string) (string, int)) {
				if f, _ := out("features"); !strings.Contains(f, "lockdown=confidentiality") {
					t.Errorf("features does not name the lockdown:\n%s", f)
				}
				// Confidentiality lockdown refuses BPF reads of any memory,
				// nginx's too: nothing can be traced, and the message says
				// why and what to boot with.
				for _, name := range []string{"master", "worker"} {
					m, code := out(name)
					if code != 1 || !strings.Contains(m, "lockdown=confidentiality") || !strings.Contains(m, "lockdown=integrity or none") {
						t.Errorf("-p %s under lockdown: exit %d, want 1 naming the lockdown and the fix:\n%s", name, code, m)
					}
				}
			},
		},
		{
			name:  "no_btf",
			setup: "mount --bind /dev/null /sys/kernel/btf/vmlinux\n",
			steps: step("features", bins.ngxprobe+" features") +
				step("master", run+" -p $MASTER --duration 1s") +
				step("worker", fmt.Sprintf("(sleep 2; curl -s http://127.0.0.1:8080/ > /dev/null) & %s -p $WORKER --duration 4s", run)),
			check: func(t *testing.T, out func(string) (string, int)) {
				if f, _ := out("features"); !strings.Contains(f, "kernel BTF") || !strings.Contains(f, "CONFIG_DEBUG_INFO_BTF") {
					t.Errorf("features does not report the missing BTF:\n%s", f)
				}
				m, code := out("master")
				if code != 1 || !strings.Contains(m, "BTF") || !strings.Contains(m, "follow an nginx master's workers") {
					t.Errorf("-p MASTER without BTF: exit %d, want 1 saying what needs BTF:\n%s", code, m)
				}
				w, code := out("worker")
				if code != 0 || !strings.Contains(w, `"probe":"ngx_http_finalize_request"`) {
					t.Errorf("-p WORKER without BTF: exit %d, want 0 and a finalize event:\n%s", code, w)
				}
			},
		},
		{
			name:  "no_uprobe_pmu",
			setup: "mount -t tmpfs none /sys/bus/event_source/devices/uprobe\n",
			steps: step("features", bins.ngxprobe+" features") +
				step("master", run+" -p $MASTER --duration 1s") +
				step("funcs", bins.ngxprobe+" funcs -p $MASTER ngx_http_finalize_request"),
			check: func(t *testing.T, out func(string) (string, int)) {
				f, code := out("features")
				if code != 1 || !strings.Contains(f, "uprobe PMU") || !strings.Contains(f, "MISSING") {
					t.Errorf("features without the uprobe PMU: exit %d, want 1 and MISSING:\n%s", code, f)
				}
				m, code := out("master")
				if code != 1 || !strings.Contains(m, "CONFIG_UPROBE_EVENTS") {
					t.Errorf("run without the uprobe PMU: exit %d, want 1 naming CONFIG_UPROBE_EVENTS:\n%s", code, m)
				}
				if _, code := out("funcs"); code != 0 {
					t.Errorf("funcs needs no uprobes, but exited %d", code)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			if err := os.Chmod(out, 0o777); err != nil {
				t.Fatal(err)
			}
			script := "OUT=" + out + "\n" + c.setup + fmt.Sprintf(guestNginx, inst.Binary) + c.steps + "kill $MASTER\n"
			res := vmtest.Run(t, kernel, vmtest.RunOptions{
				Argv:       []string{"/bin/sh", "-c", script},
				Timeout:    5 * time.Minute,
				Shares:     []string{out},
				KernelArgs: c.args,
			})
			if res.ExitCode != 0 {
				t.Fatalf("the guest ended with %d (%v)\n%s\n%s", res.ExitCode, res.Err, res.Output, tail(res.Console, 30))
			}
			c.check(t, func(name string) (string, int) {
				data, _ := os.ReadFile(filepath.Join(out, name+".out"))
				code := -1
				if b, err := os.ReadFile(filepath.Join(out, name+".exit")); err == nil {
					fmt.Sscan(string(b), &code)
				}
				t.Logf("%s (exit %d):\n%s", name, code, data)
				return string(data), code
			})
		})
	}
}
