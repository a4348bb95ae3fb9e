package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// keptCaps are the capabilities a trace keeps after attaching:
// CAP_SYS_PTRACE (19) and CAP_BPF (39).
const keptCaps = 1<<19 | 1<<39

// procCaps reads a process's effective and permitted capability sets.
func procCaps(t *testing.T, pid int) (eff, prm uint64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
		if v, ok := strings.CutPrefix(line, "CapPrm:"); ok {
			prm, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return eff, prm
}

// TestCapabilities: the capabilities each command needs, tried as a user
// who holds only those (setpriv with ambient capabilities), and the drop
// after attach: a running trace keeps CAP_SYS_PTRACE and CAP_BPF alone, in every
// thread, and still delivers events and named stacks, for a worker a
// reload started too.
func TestCapabilities(t *testing.T) {
	nginxtest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.SkipOrFail(t, "setpriv not found (util-linux)")
	}
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, "")
	master := strconv.Itoa(s.MasterPID())

	t.Run("dropped_after_attach", func(t *testing.T) {
		p := startProbe(t, "run", "-p", master, "-o", "json", "--stack")
		// With stacks, the drop follows the indexing of the workers'
		// modules (a deleted one is read through map_files).
		deadline := time.Now().Add(eventTimeout)
		for !strings.Contains(p.stderr.String(), "stacks ready") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		// Every thread: the drop is process-wide, not the main thread's.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", p.pid()))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(task))
			data, _ := os.ReadFile(filepath.Join(task, "status"))
			if !strings.Contains(string(data), fmt.Sprintf("CapEff:\t%016x", keptCaps)) {
				t.Errorf("thread %d of ngxprobe after attach:\n%s", tid, data)
			}
		}
		eff, prm := procCaps(t, p.pid())
		if eff != keptCaps || prm != keptCaps {
			t.Errorf("after attach: CapEff %#x CapPrm %#x, want only CAP_SYS_PTRACE and CAP_BPF (%#x)", eff, prm, keptCaps)
		}
		s.Reload(t)
		checkServes(t, base)
		deadline = time.Now().Add(eventTimeout)
		var named bool
		for !named && time.Now().Before(deadline) {
			for _, ev := range exEvents(t, p) {
				if pidIn(ev.PID, s.WorkerPIDs()) && strings.Contains(strings.Join(ev.frames(), " "), "ngx_http_close_connection") {
					named = true
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		stopProbeOK(t, p)
		if !named {
			t.Errorf("no close with a named stack from the reloaded worker %v after the drop: %s", s.WorkerPIDs(), p)
		}
	})

	as := func(caps string, args ...string) []string {
		argv := []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all," + caps, "--ambient-caps=-all," + caps, ngxprobeBin}
		if caps == "" {
			argv = []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", ngxprobeBin}
		}
		return append(argv, args...)
	}
	for _, c := range []struct {
		name string
		caps string
		args []string
		code int
		want string
	}{
		// The default set's filter drops the healthy request checkServes
		// makes: the summary counts its hit.
		{"run_admin_ptrace", "+sys_admin,+sys_ptrace", []string{"run", "-p", master, "-o", "json", "--duration", "3s"}, 0, `{"summary":{"hits":`},
		{"closes_admin_ptrace", "+sys_admin,+sys_ptrace", []string{"closes", "-p", master, "-o", "json", "--duration", "3s"}, 0, `"healthy":{"closed_after_response":`},
		// Every master on the host, their /proc files and executables.
		// The DaemonSet's capabilities (deploy/daemonset.yaml) for every
		// master on the host.
		{"all_nginx_daemonset_caps", daemonSetCaps(t), []string{"run", "--all-nginx", "-o", "json", "--duration", "3s"}, 0, `{"summary":{"hits":`},
		{"watch_admin_ptrace", "+sys_admin,+sys_ptrace", []string{"watch", "-p", master, "-o", "json", "--duration", "2s", "c->read->eof"}, 0, `{"summary":`},
		// perf's uprobe PMU refuses CAP_BPF + CAP_PERFMON alone.
		{"run_bpf_perfmon_ptrace", "+bpf,+perfmon,+sys_ptrace", []string{"run", "-p", master, "--duration", "1s"}, 1, "CAP_SYS_ADMIN"},
		{"run_without_ptrace", "+sys_admin", []string{"run", "-p", master, "--duration", "1s"}, 1, "CAP_SYS_PTRACE"},
		{"run_without_caps", "", []string{"run", "-p", master, "--duration", "1s"}, 1, "CAP_BPF"},
		{"check_none", "", []string{"check", "--binary", inst.Binary, "-e", "ngx_http_finalize_request { print(rc) }"}, 0, ": ok against"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &proc{}
			launchTo(t, p, &p.stdout, as(c.caps, c.args...)...)
			if c.code == 0 && (c.args[0] == "run" || c.args[0] == "closes") {
				waitAttached(t, p, 20*time.Millisecond)
				checkServes(t, base)
			}
			code := p.wait(t, runTimeout)
			checkNoPanic(t, p)
			out := p.stdout.String() + p.stderr.String()
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("as nobody with %q: exit %d, want %d and %q: %s", c.caps, code, c.code, c.want, p)
			}
		})
	}
	checkServes(t, base)
}

// daemonSetCaps reads the capabilities deploy/daemonset.yaml gives the
// container, as setpriv writes them: "+sys_admin,+sys_ptrace,...". The
// manifest must also keep the container unprivileged, dropping the rest.
func daemonSetCaps(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					HostPID    bool `yaml:"hostPID"`
					Containers []struct {
						SecurityContext struct {
							Privileged   bool `yaml:"privileged"`
							Capabilities struct {
								Drop []string `yaml:"drop"`
								Add  []string `yaml:"add"`
							} `yaml:"capabilities"`
						} `yaml:"securityContext"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &ds); err != nil {
		t.Fatalf("deploy/daemonset.yaml: %v", err)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID || len(pod.Containers) != 1 {
		t.Fatalf("deploy/daemonset.yaml: hostPID %v, %d containers; want hostPID and one container", pod.HostPID, len(pod.Containers))
	}
	sc := pod.Containers[0].SecurityContext
	if sc.Privileged || strings.Join(sc.Capabilities.Drop, ",") != "ALL" || len(sc.Capabilities.Add) == 0 {
		t.Fatalf("deploy/daemonset.yaml: privileged %v, drop %v, add %v; want unprivileged, dropping ALL, adding some", sc.Privileged, sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	// This machine's bounding set lacks CAP_SYS_RESOURCE (bit 24), which
	// the manifest adds for kernels before 5.11 (RLIMIT_MEMLOCK); a
	// capability outside it cannot be granted here, and is not needed here.
	bits := map[string]uint{"SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}
	bounding := procCapBnd(t)
	var caps []string
	for _, c := range sc.Capabilities.Add {
		bit, ok := bits[c]
		if !ok {
			t.Fatalf("deploy/daemonset.yaml adds %s, which this test does not know", c)
		}
		if bounding&(1<<bit) == 0 {
			t.Logf("CAP_%s is outside this machine's bounding set: tried without it", c)
			continue
		}
		caps = append(caps, "+"+strings.ToLower(c))
	}
	return strings.Join(caps, ",")
}

// procCapBnd is this process's capability bounding set.
func procCapBnd(t *testing.T) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n
		}
	}
	return 0
}
