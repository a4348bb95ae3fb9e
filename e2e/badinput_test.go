package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// badRun is one failed ngxprobe run and what its stderr must say.
type badRun struct {
	name     string
	argv     []string
	wantCode int        // 0: any non-zero status
	want     []string   // all must appear in stderr (case-insensitive)
	wantAny  [][]string // for each group, one of them must appear
}

// checkBadRun runs it, checks the status and message, then that nginx
// still serves and that nothing stays attached.
func checkBadRun(t *testing.T, r badRun, base string, targets []string) {
	t.Helper()
	p := runProbe(t, r.argv...)
	code := p.exitCode()
	switch {
	case r.wantCode != 0 && code != r.wantCode:
		t.Errorf("exit status %d, want %d: %s", code, r.wantCode, p)
	case code == 0:
		t.Errorf("exit status 0, want failure: %s", p)
	case code < 0:
		t.Errorf("killed by a signal, want an error exit: %s", p)
	}
	checkNoPanic(t, p)
	msg := strings.ToLower(p.stderr.String())
	if !strings.Contains(msg, "ngxprobe: ") {
		t.Errorf("no \"ngxprobe: \" error message on stderr: %s", p)
	}
	for _, w := range r.want {
		if !strings.Contains(msg, strings.ToLower(w)) {
			t.Errorf("message lacks %q: %s", w, p)
		}
	}
	for _, group := range r.wantAny {
		ok := false
		for _, w := range group {
			ok = ok || strings.Contains(msg, strings.ToLower(w))
		}
		if !ok {
			t.Errorf("message has none of %q: %s", group, p)
		}
	}
	t.Logf("ngxprobe said (status %d): %s", code, strings.TrimSpace(p.stderr.String()))
	checkServes(t, base)
	checkNoLeftovers(t, []int{p.pid()}, targets)
}

func TestBadInput(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, "")
	master := strconv.Itoa(s.MasterPID())
	// Not inst.Binary: other ngxprobe runs on this machine may trace it.
	targets := []string{"/proc/" + master + "/exe"}
	for _, w := range s.WorkerPIDs() {
		targets = append(targets, "/proc/"+strconv.Itoa(w)+"/exe")
	}
	run := func(probe string) []string { return ngx("run", "-p", master, "-o", "json", "--probe", probe) }

	for _, r := range []badRun{
		{
			name: "unknown_function",
			argv: run("ngx_http_finalize_requst"),
			want: []string{"ngx_http_finalize_requst", "did you mean", "ngx_http_finalize_request"},
		},
		{
			name: "unknown_field",
			argv: run("ngx_http_finalize_request:r->conection->number"),
			want: []string{"conection", "did you mean", "connection"},
		},
		{
			// '.' on a pointer: the message must point at '->'.
			name: "dot_on_pointer",
			argv: run("ngx_http_finalize_request:r.connection"),
			want: []string{"r.connection", "pointer", "->"},
		},
		{
			// '->' on a struct: the message must say it is not a pointer.
			name:    "arrow_on_struct",
			argv:    run("ngx_http_finalize_request:r->headers_out->status"),
			want:    []string{"r->headers_out->status"},
			wantAny: [][]string{{"not a pointer", "use '.'", "use \".\""}},
		},
	} {
		t.Run(r.name, func(t *testing.T) { checkBadRun(t, r, base, targets) })
	}

	t.Run("pid_not_nginx", func(t *testing.T) {
		sleep := launch(t, "sleep", "30")
		defer func() {
			_ = sleep.cmd.Process.Kill()
			<-sleep.done
		}()
		checkBadRun(t, badRun{
			argv: ngx("run", "-p", strconv.Itoa(sleep.pid()), "-o", "json"),
			want: []string{"not nginx", strconv.Itoa(sleep.pid())},
		}, base, targets)
	})

	t.Run("pid_exited", func(t *testing.T) {
		gone := launch(t, "true")
		gone.wait(t, 10*time.Second)
		pid := strconv.Itoa(gone.pid())
		checkBadRun(t, badRun{
			argv:    ngx("run", "-p", pid, "-o", "json"),
			want:    []string{pid},
			wantAny: [][]string{{"exited", "no such process"}},
		}, base, targets)
	})

	t.Run("stripped", func(t *testing.T) { testStripped(t, inst, base, targets) })
	t.Run("not_root", func(t *testing.T) { testNotRoot(t, inst, s, base, targets) })
}

// testStripped: without DWARF, the default set (which reads arguments)
// is refused with a hint, but an exported function can still be probed by
// name, without values.
func testStripped(t *testing.T, inst nginxtest.Install, base string, targets []string) {
	dir := t.TempDir()
	stripped := filepath.Join(dir, "nginx-stripped")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "strip", "-o", stripped, inst.Binary).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "strip: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "readelf", "-S", "-W", stripped).CombinedOutput()
	if err != nil {
		t.Fatalf("readelf -S %s: %v\n%s", stripped, err, out)
	}
	if strings.Contains(string(out), ".debug_info") {
		t.Fatalf("%s still has .debug_info", stripped)
	}
	// nginx is linked with -Wl,-E: its functions stay in .dynsym.
	out, err = exec.CommandContext(ctx, "nm", "-D", "--defined-only", stripped).CombinedOutput()
	if err != nil {
		t.Fatalf("nm -D %s: %v\n%s", stripped, err, out)
	}
	if !regexp.MustCompile(`(?m)^[0-9a-f]+ T ngx_http_finalize_request$`).Match(out) {
		t.Fatalf("nm -D %s: no exported ngx_http_finalize_request (built without -Wl,-E?)", stripped)
	}
	targets = append(targets, stripped)

	t.Run("default_set", func(t *testing.T) {
		checkBadRun(t, badRun{
			argv:     ngx("run", "--binary", stripped, "-o", "json"),
			wantCode: 1,
			want:     []string{"debug info"},
			wantAny:  [][]string{{"dbgsym", "debuginfod", "-g"}},
		}, base, targets)
	})

	t.Run("exported_by_name", func(t *testing.T) {
		// Run the stripped binary too, so the probe has something to hit.
		ss := nginxtest.Install{Variant: inst.Variant, Prefix: inst.Prefix, Binary: stripped, SourceDir: inst.SourceDir}
		sn, sbase := startPlain(t, ss, 1, "")
		p := startProbe(t, "run", "--binary", stripped, "--probe", finalizeProbe, "--duration", "1s", "-o", "json")
		if code, _ := httpGet(t, sbase+"/stripped"); code != 200 {
			t.Errorf("GET /stripped on the stripped nginx = %d", code)
		}
		code := p.wait(t, stopTimeout)
		checkNoPanic(t, p)
		if code != 0 {
			t.Fatalf("run --binary %s --probe %s: exit status %d, want 0: %s", stripped, finalizeProbe, code, p)
		}
		evs := events(t, p)
		var hit bool
		for _, ev := range evs {
			if ev.Probe == finalizeProbe && len(ev.Values) == 0 && pidIn(ev.PID, sn.WorkerPIDs()) {
				hit = true
			}
		}
		if !hit {
			t.Errorf("no value-less %s event from the stripped nginx's worker %v: %s", finalizeProbe, sn.WorkerPIDs(), p)
		}
		checkSummary(t, p)
		checkServes(t, base)
		checkNoLeftovers(t, []int{p.pid()}, targets)
	})
}

// testNotRoot: funcs and fields need no privileges; run names the
// capabilities it lacks.
func testNotRoot(t *testing.T, inst nginxtest.Install, s *nginxtest.Server, base string, targets []string) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.SkipOrFail(t, "setpriv not found (util-linux)")
	}
	// A copy of nginx that nobody can read, in a directory nobody can enter
	// (t.TempDir is 0700).
	dir, err := os.MkdirTemp("", "ngxprobe-e2e-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nginxCopy := filepath.Join(dir, "nginx")
	data, err := os.ReadFile(inst.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nginxCopy, data, 0o755); err != nil {
		t.Fatal(err)
	}
	targets = append(targets, nginxCopy)
	nobody := func(args ...string) []string {
		return append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", ngxprobeBin}, args...)
	}
	// Make sure setpriv really drops root here.
	if out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "id", "-u").Output(); err != nil || strings.TrimSpace(string(out)) != "65534" {
		t.Fatalf("setpriv ... id -u = %q, %v; want 65534", out, err)
	}

	t.Run("funcs", func(t *testing.T) {
		p := runProbe(t, nobody("funcs", "--binary", nginxCopy, "ngx_http_finalize")...)
		checkNoPanic(t, p)
		if p.exitCode() != 0 {
			t.Fatalf("funcs as nobody: exit status %d: %s", p.exitCode(), p)
		}
		if !regexp.MustCompile(`(?m)^ngx_http_finalize_request\t`).MatchString(p.stdout.String()) {
			t.Errorf("funcs as nobody: no ngx_http_finalize_request line: %s", p)
		}
	})
	t.Run("fields", func(t *testing.T) {
		p := runProbe(t, nobody("fields", "--binary", nginxCopy, "ngx_connection_t")...)
		checkNoPanic(t, p)
		if p.exitCode() != 0 {
			t.Fatalf("fields as nobody: exit status %d: %s", p.exitCode(), p)
		}
		out := p.stdout.String()
		if !strings.Contains(out, "ngx_connection_t") || !regexp.MustCompile(`\bnumber;`).MatchString(out) {
			t.Errorf("fields as nobody: no ngx_connection_t layout with a number field: %s", p)
		}
	})
	caps := []string{"CAP_BPF", "CAP_PERFMON"}
	t.Run("run_binary", func(t *testing.T) {
		checkBadRun(t, badRun{
			argv:     nobody("run", "--binary", nginxCopy, "-o", "json", "--duration", "1s"),
			wantCode: 1,
			want:     caps,
		}, base, targets)
	})
	// The usual way: -p of root's nginx master. An unprivileged user
	// cannot open /proc/PID/exe of a root process, but what it lacks to
	// trace is the capabilities, and the message must say so.
	t.Run("run_pid", func(t *testing.T) {
		checkBadRun(t, badRun{
			argv:     nobody("run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json", "--duration", "1s"),
			wantCode: 1,
			want:     caps,
		}, base, targets)
	})
}
