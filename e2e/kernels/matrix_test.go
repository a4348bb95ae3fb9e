package kernels

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/vmtest"
)

// feature is a column of the matrix: the tests that prove it, run in the
// guest, and the kernel features whose absence degrades it.
type feature struct {
	name string
	// bin is the test binary (e2e or probes) and run its -test.run.
	bin, run string
	// degradedBy names lines of ngxprobe features whose "no" degrades
	// this feature (the test still passes); their detail is the reason.
	degradedBy []string
}

var matrix = []feature{
	{name: "run", bin: "e2e", run: "^TestClientAbort499$/^o2$", degradedBy: []string{"bpf_probe_read_kernel", "task_struct real_parent and tgid in BTF", "bpf_get_current_task_btf loads"}},
	// The half-close watch has diff mode's uretprobe on the writer: its
	// stacks unwind through the kernel's return instances.
	{name: "stack", bin: "e2e", run: "^(TestStacksMatchGDB|TestWatchWSSHalfClose)$/^o2$", degradedBy: []string{"uretprobe return instances in BTF"}},
	{name: "watch", bin: "e2e", run: "^TestWatchWSSBackendClose$/^o2$", degradedBy: []string{"uprobe_multi links"}},
	{name: "examples", bin: "e2e", run: "^TestExampleScenarios$/^o2$"},
	{name: "verifier", bin: "probes", run: "^TestVerifierAccepts"},
}

// result is one cell: works, degraded (with the reason) or fails.
type result struct {
	status, reason string
	took           time.Duration
}

// featureLine is a line of `ngxprobe features`.
var featureLine = regexp.MustCompile(`(?m)^(.+?)\s{2,}(yes|no|MISSING)\b.*?(?:\): (.*))?$`)

// TestKernelMatrix runs the e2e subset that matters on each of Debian's
// kernels, booted in QEMU, and prints one line per kernel and feature.
// The README's kernel table must say the same: NGXPROBE_UPDATE_README=1
// rewrites it from the results.
func TestKernelMatrix(t *testing.T) {
	nginxtest.RequireRoot(t)
	root := moduleRoot(t)
	bins := buildBinaries(t, root)
	// The guest finds the test nginx where the host built it.
	nginxtest.Build(t, nginxtest.VariantO2)

	rows := map[string]map[string]result{}
	var kernels []string
	start := time.Now()
	// Rows are named by major.minor and suite (6.1-bookworm), not by the
	// release: Debian's point releases must not change the README.
	for _, k := range vmtest.Kernels(t) {
		kernels = append(kernels, k.Name)
		rows[k.Name] = runKernel(t, k, root, bins)
	}
	host := hostName(t)
	kernels = append(kernels, host)
	rows[host] = hostRow(t, bins)

	var b strings.Builder
	for _, k := range kernels {
		for _, f := range matrix {
			r := rows[k][f.name]
			line := fmt.Sprintf("%-28s %-9s %s", k, f.name, r.status)
			if r.reason != "" {
				line += " (" + r.reason + ")"
			}
			if r.took > 0 {
				line += fmt.Sprintf(" [%v]", r.took.Round(time.Second))
			}
			fmt.Fprintln(&b, line)
		}
	}
	t.Logf("kernel matrix (%v):\n%s", time.Since(start).Round(time.Second), b.String())
	checkReadme(t, root, table(kernels, rows))
}

// binaries are built on the host, once: the guest runs them from the
// host's files.
type binaries struct{ dir, ngxprobe string }

func (b binaries) test(name string) string { return filepath.Join(b.dir, name+".test") }

func buildBinaries(t *testing.T, root string) binaries {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := binaries{dir: dir, ngxprobe: filepath.Join(dir, "ngxprobe")}
	for _, c := range [][]string{
		{"go", "build", "-o", b.ngxprobe, "./cmd/ngxprobe"},
		{"go", "test", "-c", "-o", b.test("e2e"), "./e2e"},
		{"go", "test", "-c", "-o", b.test("probes"), "./probes"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = root
		// The guest's CPU model is x86-64 v1 (no cx16): build for it.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOAMD64=v1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return b
}

// runKernel boots k once and runs every feature's tests in it.
func runKernel(t *testing.T, k vmtest.Kernel, root string, bins binaries) map[string]result {
	t.Helper()
	out := t.TempDir()
	if err := os.Chmod(out, 0o777); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "%s features > %s/features 2>&1\n", bins.ngxprobe, out)
	for _, f := range matrix {
		dir := filepath.Join(root, f.bin)
		fmt.Fprintf(&script, "start=$(date +%%s); (cd %s && %s -test.run '%s' -test.v -test.count=1 -test.timeout 15m) > %s/%s.out 2>&1; echo $? $(( $(date +%%s) - start )) > %s/%s.exit\n",
			dir, bins.test(f.bin), f.run, out, f.name, out, f.name)
	}
	opts := vmtest.RunOptions{
		Argv:    []string{"/bin/sh", "-c", script.String()},
		Env:     []string{"CI=true", "NGXPROBE_BIN=" + bins.ngxprobe},
		Timeout: 25 * time.Minute,
		Shares:  []string{out},
	}
	res := vmtest.Run(t, k, opts)
	if _, err := os.Stat(filepath.Join(out, "features")); err != nil && res.ExitCode < 0 {
		// The guest died before the script's first line: QEMU's TCG
		// now and then breaks a kernel's boot-time code patching (seen:
		// an int3 oops in 6.12's early boot, 1 boot in about 20). One
		// more boot; a crash during the tests is never retried.
		t.Logf("%s: the guest died before the tests started (%v); booting once more:\n%s", k.Release, res.Err, tail(res.Console, 8))
		res = vmtest.Run(t, k, opts)
	}
	if res.ExitCode != 0 {
		t.Errorf("%s: the guest ended with %d (%v)\n%s", k.Release, res.ExitCode, res.Err, tail(res.Console, 40))
	}
	t.Logf("%s (%s %s): booted in %v, ran for %v (%s)", k.Name, k.Release, k.Version, res.Boot.Round(100*time.Millisecond), res.Elapsed.Round(time.Second), res.Accel)
	features, _ := os.ReadFile(filepath.Join(out, "features"))
	t.Logf("%s: ngxprobe features:\n%s", k.Release, features)
	cells := map[string]result{}
	for _, f := range matrix {
		exit, _ := os.ReadFile(filepath.Join(out, f.name+".exit"))
		fields := strings.Fields(string(exit))
		r := result{status: "fails", reason: "did not run"}
		if len(fields) == 2 {
			code, _ := strconv.Atoi(fields[0])
			secs, _ := strconv.Atoi(fields[1])
			r = cell(f, code, string(features))
			r.took = time.Duration(secs) * time.Second
		}
		if r.status == "fails" {
			log, _ := os.ReadFile(filepath.Join(out, f.name+".out"))
			t.Errorf("%s: %s fails:\n%s", k.Release, f.name, tail(string(log), 60))
		}
		cells[f.name] = r
	}
	return cells
}

// cell judges a feature from its tests' exit code and the features the
// kernel lacks.
func cell(f feature, code int, features string) result {
	if code != 0 {
		return result{status: "fails", reason: fmt.Sprintf("tests exited %d", code)}
	}
	lacks := map[string]string{}
	for _, m := range featureLine.FindAllStringSubmatch(features, -1) {
		if m[2] != "yes" {
			lacks[strings.TrimSpace(m[1])] = strings.TrimSpace(m[3])
		}
	}
	for _, name := range f.degradedBy {
		if detail, ok := lacks[name]; ok {
			reason := "no " + name
			if detail != "" {
				reason += ": " + detail
			}
			return result{status: "degraded", reason: reason}
		}
	}
	return result{status: "works"}
}

// hostRow is the host's kernel: the whole suite runs on it directly, so
// its cells come from `ngxprobe features` alone.
func hostRow(t *testing.T, bins binaries) map[string]result {
	t.Helper()
	out, err := exec.Command(bins.ngxprobe, "features").CombinedOutput()
	if err != nil {
		t.Errorf("ngxprobe features on the host: %v\n%s", err, out)
	}
	cells := map[string]result{}
	for _, f := range matrix {
		cells[f.name] = cell(f, 0, string(out))
	}
	return cells
}

// hostName is the host's kernel as major.minor-host.
func hostName(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimSpace(string(out))
	t.Logf("host kernel %s", release)
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return release + "-host"
	}
	return parts[0] + "." + strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }) + "-host"
}

// table renders the README's kernel table from the results.
func table(kernels []string, rows map[string]map[string]result) string {
	var b strings.Builder
	b.WriteString("| kernel |")
	for _, f := range matrix {
		b.WriteString(" " + f.name + " |")
	}
	b.WriteString("\n|---|")
	for range matrix {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	sorted := append([]string(nil), kernels...)
	sort.SliceStable(sorted, func(i, j int) bool { return versionLess(sorted[i], sorted[j]) })
	var notes []string
	for _, k := range sorted {
		fmt.Fprintf(&b, "| %s |", k)
		for _, f := range matrix {
			r := rows[k][f.name]
			cell := r.status
			if r.reason != "" {
				notes = append(notes, fmt.Sprintf("%s, %s: %s", k, f.name, r.reason))
				cell += fmt.Sprintf(" (%d)", len(notes))
			}
			b.WriteString(" " + cell + " |")
		}
		b.WriteString("\n")
	}
	for i, n := range notes {
		fmt.Fprintf(&b, "\n(%d) %s", i+1, n)
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

// versionLess orders kernel releases by their numbers.
func versionLess(a, b string) bool {
	num := func(s string) []int {
		var out []int
		for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' })[:2] {
			n, _ := strconv.Atoi(p)
			out = append(out, n)
		}
		return out
	}
	x, y := num(a), num(b)
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return false
}

const (
	tableStart = "<!-- kernel-matrix: written by e2e/kernels from the results; NGXPROBE_UPDATE_README=1 go test ./e2e/kernels -->"
	tableEnd   = "<!-- /kernel-matrix -->"
)

// checkReadme compares the README's kernel table with the results, or
// writes it with NGXPROBE_UPDATE_README=1.
func checkReadme(t *testing.T, root, got string) {
	t.Helper()
	path := filepath.Join(root, "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no kernel table between %q and %q", tableStart, tableEnd)
	}
	have := strings.TrimSpace(s[i+len(tableStart) : j])
	if have == strings.TrimSpace(got) {
		return
	}
	if os.Getenv("NGXPROBE_UPDATE_README") == "1" {
		s = s[:i+len(tableStart)] + "\n" + got + s[j:]
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("README.md's kernel table rewritten")
		return
	}
	t.Errorf("README.md's kernel table differs from the matrix's results; rerun with NGXPROBE_UPDATE_README=1.\nREADME:\n%s\nresults:\n%s", have, got)
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
