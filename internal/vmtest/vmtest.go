package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// Suites are the Debian suites whose cloud kernels Kernels boots, oldest
// first: bullseye's 5.10, bookworm's 6.1 and bookworm-backports' 6.12.
var Suites = []string{"bullseye", "bookworm", "bookworm-backports"}

// Guest machine and defaults.
const (
	// tcgCPU is the emulated CPU: every feature TCG has but two. QEMU 7.2's
	// CMPXCHG16B with a %gs override corrupts state now and then: 6.12's
	// SLUB fast path (this_cpu_cmpxchg128) double-faulted or oopsed in 1
	// boot of 8; without cx16 SLUB takes its locked path (24 of 24 boots
	// fine). la57 (5-level paging) only makes page walks slower, and few
	// machines people run have it.
	tcgCPU = "max,la57=off,cx16=off"

	GuestMemory    = "2G"
	GuestCPUs      = 2
	DefaultTimeout = 5 * time.Minute
	// DefaultPath is the guest command's $PATH.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	fetchTimeout = 15 * time.Minute
)

// Kernel is one Debian kernel package, unpacked in the cache by
// fetch-kernels.sh, with the initramfs Run boots it with.
type Kernel struct {
	// Name is "<major.minor>-<suite>", e.g. "5.10-bullseye": a subtest name.
	Name string
	// Suite is the Debian suite the package came from ("bookworm-backports").
	Suite string
	// Package and Version are the binary package, e.g.
	// "linux-image-6.1.0-57-cloud-amd64-unsigned" and "6.1.192-3".
	Package, Version string
	// Release is what uname -r says in the guest ("6.1.0-57-cloud-amd64").
	Release string
	// Dir is the cache directory, $NGXPROBE_CACHE/kernels/<Version>.
	Dir string
	// Image is the kernel (boot/vmlinuz-<Release>), Config its config.
	Image, Config string
	// Modules is the package's /lib/modules/<Release> in Dir; the guest
	// sees it at /lib/modules/<Release> too, so modprobe works there.
	Modules string
	// BTF is CONFIG_DEBUG_INFO_BTF=y: the guest has /sys/kernel/btf/vmlinux.
	BTF bool
	// Initrd is the initramfs (busybox, the init script, the modules the
	// init loads) built for this kernel, in Dir.
	Initrd string
	// InitModules are the modules the initramfs loads, in order; the rest
	// of what virtio-pci, virtiofs and overlayfs need is built in.
	InitModules []string
}

var kernels struct {
	once sync.Once
	ks   []Kernel
	err  error
}

// Kernels fetches (once; cached on disk across runs) the cloud kernels of
// Suites, or of the suites in $NGXPROBE_VM_SUITES (space-separated), and
// builds their initramfs. The host's own kernel is not among them: tests
// run on it directly. Without root, QEMU, virtiofsd or the packages the
// test is skipped (failed when CI=true).
func Kernels(t testing.TB) []Kernel {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testenv.SkipOrFail(t, "vmtest boots amd64 Debian kernels on linux/amd64, have %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	testenv.RequireRoot(t)
	kernels.once.Do(func() {
		start := time.Now()
		kernels.ks, kernels.err = fetchKernels(suites())
		if kernels.err == nil {
			var names []string
			for _, k := range kernels.ks {
				names = append(names, k.Name+" ("+k.Package+" "+k.Version+")")
			}
			t.Logf("vmtest: kernels ready in %v: %s", time.Since(start).Round(time.Millisecond), strings.Join(names, ", "))
		}
	})
	if kernels.err != nil {
		testenv.SkipOrFail(t, "vmtest: can't get the kernels: %v", kernels.err)
	}
	return kernels.ks
}

func suites() []string {
	if v := strings.Fields(os.Getenv("NGXPROBE_VM_SUITES")); len(v) > 0 {
		return v
	}
	return Suites
}

func fetchKernels(suites []string) ([]Kernel, error) {
	// fetch-kernels.sh runs setup-deps.sh vm: QEMU and busybox come first.
	var ks []Kernel
	for _, s := range suites {
		k, err := fetchKernel(s)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64: %w (setup-deps.sh vm installs qemu-system-x86)", err)
	}
	if _, err := Virtiofsd(); err != nil {
		return nil, err
	}
	return ks, nil
}

// FetchScript returns the path of fetch-kernels.sh: $NGXPROBE_FETCH_KERNELS,
// or internal/vmtest/fetch-kernels.sh of the tree that holds the nginxtest
// scripts (see nginxtest.BuildScript).
func FetchScript() (string, error) {
	if p := os.Getenv("NGXPROBE_FETCH_KERNELS"); p != "" {
		return p, nil
	}
	p, err := nginxtest.BuildScript()
	if err == nil {
		p = filepath.Join(filepath.Dir(filepath.Dir(p)), "vmtest", "fetch-kernels.sh")
		_, err = os.Stat(p)
	}
	if err != nil {
		return "", fmt.Errorf("fetch-kernels.sh not found (set NGXPROBE_FETCH_KERNELS): %w", err)
	}
	return p, nil
}

// fetchKernel runs fetch-kernels.sh for the suite, reads the INFO of the
// directory it prints and builds the initramfs.
func fetchKernel(suite string) (Kernel, error) {
	script, err := FetchScript()
	if err != nil {
		return Kernel{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, suite)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return Kernel{}, fmt.Errorf("%s %s: %v\n%s", script, suite, err, tail(stderr.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if !filepath.IsAbs(dir) {
		return Kernel{}, fmt.Errorf("%s %s: no result directory on stdout (got %q)", script, suite, stdout.String())
	}
	k, err := readKernel(dir)
	if err != nil {
		return Kernel{}, err
	}
	k.Initrd, k.InitModules, err = buildInitramfs(k)
	if err != nil {
		return Kernel{}, fmt.Errorf("%s: initramfs: %w", k.Name, err)
	}
	return k, nil
}

// readKernel reads a fetch-kernels.sh result directory.
func readKernel(dir string) (Kernel, error) {
	data, err := os.ReadFile(filepath.Join(dir, "INFO"))
	if err != nil {
		return Kernel{}, err
	}
	info := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			info[k] = strings.TrimSpace(v)
		}
	}
	for _, key := range []string{"package", "version", "suite", "release", "image", "config", "modules"} {
		if info[key] == "" {
			return Kernel{}, fmt.Errorf("%s/INFO has no %s", dir, key)
		}
	}
	k := Kernel{
		Suite:   info["suite"],
		Package: info["package"],
		Version: info["version"],
		Release: info["release"],
		Dir:     dir,
		Image:   filepath.Join(dir, info["image"]),
		Config:  filepath.Join(dir, info["config"]),
		Modules: filepath.Join(dir, info["modules"]),
	}
	series := k.Release
	if m := regexp.MustCompile(`^\d+\.\d+`).FindString(k.Release); m != "" {
		series = m
	}
	k.Name = series + "-" + k.Suite
	for _, f := range []string{k.Image, k.Config, k.Modules} {
		if _, err := os.Stat(f); err != nil {
			return Kernel{}, err
		}
	}
	k.BTF = ConfigValue(k.Config, "CONFIG_DEBUG_INFO_BTF") == "y"
	return k, nil
}

// ConfigValue returns the value of option (e.g. "CONFIG_NET_9P") in a
// kernel config file: "y", "m", a string, or "" when it is not set.
func ConfigValue(config, option string) string {
	data, err := os.ReadFile(config)
	if err != nil {
		return ""
	}
	prefix := option + "="
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// RunOptions is what Run runs in the guest.
type RunOptions struct {
	// Argv is the command; Argv[0] is looked up in the guest's $PATH
	// (the host's files: a host path works as it is).
	Argv []string
	// Env is added to the command's environment, which otherwise is only
	// PATH=DefaultPath, HOME=/root and, when the host has it set, CI.
	Env []string
	// Dir is the working directory; "" means /.
	Dir string
	// Timeout bounds the whole boot and run; 0 means DefaultTimeout.
	Timeout time.Duration
	// Shares are host directories the guest may write, at the same paths
	// (the rest of the host's files are read-only, and what the guest
	// writes there stays in the guest's memory).
	Shares []string
	// KernelArgs are added to the kernel's command line, e.g.
	// "lockdown=confidentiality".
	KernelArgs []string
}

// Result is how a guest run ended.
type Result struct {
	// ExitCode is the command's exit status (128+N for signal N; 125
	// when the guest could not set up its root, 126/127 when the command
	// could not be started), or -1 when the guest gave none (Err says why).
	ExitCode int
	// Output is the command's stdout and stderr, interleaved.
	Output string
	// Console is the serial console: the kernel's messages, the init's
	// and the VMTEST-START and VMTEST-EXIT markers, then QEMU's stderr.
	Console string
	// Elapsed is the whole run, from starting QEMU until it exited.
	Elapsed time.Duration
	// Boot is from starting QEMU until the command started (VMTEST-START
	// on the console); 0 when it never did.
	Boot time.Duration
	// Accel is the QEMU accelerator ("tcg" or "kvm").
	Accel string
	// Err is why there is no exit status: a timeout, QEMU failing, the
	// guest crashing. Nil when ExitCode is the command's.
	Err error
}

// Run boots k in QEMU and runs opts.Argv in it as root, with the host's
// files as its root file system, and returns how it ended. Run itself only
// fails the test (or skips it, see Kernels) when it cannot start the guest;
// the caller judges the Result.
func Run(t testing.TB, k Kernel, opts RunOptions) Result {
	t.Helper()
	if len(opts.Argv) == 0 {
		t.Fatalf("vmtest.Run: no command")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		testenv.SkipOrFail(t, "vmtest: qemu-system-x86_64: %v (setup-deps.sh vm installs qemu-system-x86)", err)
	}
	fsd, err := Virtiofsd()
	if err != nil {
		testenv.SkipOrFail(t, "vmtest: %v", err)
	}
	if k.Initrd == "" {
		t.Fatalf("vmtest.Run: kernel %s has no initramfs (use one from Kernels)", k.Name)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	state := t.TempDir()
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "run.sh"), []byte(runScript(opts)), 0o755); err != nil {
		t.Fatal(err)
	}
	sockets, err := socketDir()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockets)

	// The daemons: the host's / (read-only), the state directory, the shares.
	type share struct{ tag, host, guest string }
	shares := []share{{rootTag, "/", "/"}, {stateTag, state, GuestStateDir}}
	var mounts strings.Builder
	for i, dir := range opts.Shares {
		abs, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(abs, " \t\n") {
			t.Fatalf("vmtest.Run: share %q: blanks in the path", abs)
		}
		tag := fmt.Sprintf("share%d", i)
		shares = append(shares, share{tag, abs, abs})
		fmt.Fprintf(&mounts, "%s %s\n", tag, abs)
	}
	if err := os.WriteFile(filepath.Join(state, "mounts"), []byte(mounts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var daemons []*virtiofsd
	defer func() {
		for _, d := range daemons {
			d.stop()
		}
	}()
	accelName, _ := Accel()
	cpu := tcgCPU
	if accelName == AccelKVM {
		cpu = "host"
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", accelName, "-cpu", cpu,
		"-machine", "pc,memory-backend=mem",
		"-object", "memory-backend-memfd,id=mem,size=" + GuestMemory + ",share=on",
		"-m", GuestMemory, "-smp", strconv.Itoa(GuestCPUs),
		"-serial", "stdio",
		"-kernel", k.Image, "-initrd", k.Initrd,
		"-append", strings.Join(append([]string{"console=ttyS0 panic=-1 8250.nr_uarts=1 random.trust_cpu=on"}, opts.KernelArgs...), " "),
		"-device", "virtio-rng-pci",
	}
	for i, s := range shares {
		sock := filepath.Join(sockets, fmt.Sprintf("fs%d.sock", i))
		d, err := startVirtiofsd(fsd, s.host, sock, s.tag == rootTag)
		if err != nil {
			t.Fatalf("vmtest: %v", err)
		}
		daemons = append(daemons, d)
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=fs%d,path=%s", i, sock),
			"-device", fmt.Sprintf("vhost-user-fs-pci,chardev=fs%d,tag=%s,queue-size=1024", i, s.tag))
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	console := &consoleLog{marker: []byte("VMTEST-START")}
	if os.Getenv("NGXPROBE_VM_CONSOLE") != "" {
		console.echo = os.Stderr
	}
	var qemuErr bytes.Buffer // read after Run
	cmd.Stdout = console
	cmd.Stderr = &qemuErr
	start := time.Now()
	console.start = start
	runErr := cmd.Run()
	res := Result{Elapsed: time.Since(start), ExitCode: -1, Accel: accelName}
	for _, d := range daemons {
		d.stop()
	}
	daemons = nil
	res.Console = strings.ReplaceAll(console.String(), "\r\n", "\n")
	if s := qemuErr.String(); s != "" {
		res.Console += "\n[qemu stderr]\n" + s
	}
	res.Boot = console.markedAt()
	if out, err := os.ReadFile(filepath.Join(state, "output")); err == nil {
		res.Output = string(out)
	}
	code, ok := exitCode(state, res.Console)
	switch {
	case ctx.Err() != nil:
		res.Err = fmt.Errorf("timed out after %v (QEMU killed)", timeout)
	case runErr != nil:
		res.Err = fmt.Errorf("qemu: %v", runErr)
	case !ok:
		res.Err = errors.New("the guest stopped without an exit status (see Console)")
	}
	if ok && ctx.Err() == nil {
		res.ExitCode = code
		res.Err = nil
	}
	return res
}

var exitMarker = regexp.MustCompile(`(?m)^VMTEST-EXIT (\d+)\s*$`)

// exitCode reads the guest's exit status: the state directory's exit file,
// or the last VMTEST-EXIT line on the console.
func exitCode(state, console string) (int, bool) {
	if data, err := os.ReadFile(filepath.Join(state, "exit")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			return n, true
		}
	}
	m := exitMarker.FindAllStringSubmatch(console, -1)
	if len(m) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(m[len(m)-1][1])
	return n, err == nil
}

// runScript is the guest's run.sh: it enters Dir and execs Argv with a
// fresh environment (the host's /bin/sh and /usr/bin/env run it).
func runScript(opts RunOptions) string {
	env := []string{"PATH=" + DefaultPath, "HOME=/root"}
	if ci, ok := os.LookupEnv("CI"); ok {
		env = append(env, "CI="+ci)
	}
	env = append(env, opts.Env...)
	dir := opts.Dir
	if dir == "" {
		dir = "/"
	}
	var b strings.Builder
	b.WriteString("# vmtest: the command, run by the guest's init in the host's root\n")
	fmt.Fprintf(&b, "cd %s || exit 126\n", shellQuote(dir))
	b.WriteString("exec /usr/bin/env -i")
	for _, e := range env {
		b.WriteString(" " + shellQuote(e))
	}
	for _, a := range opts.Argv {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// consoleLog collects the console and notes when the marker first shows.
type consoleLog struct {
	mu     sync.Mutex
	b      bytes.Buffer
	marker []byte
	start  time.Time
	at     time.Duration
	echo   io.Writer
}

func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	from := max(0, c.b.Len()-len(c.marker))
	c.b.Write(p)
	if c.at == 0 && bytes.Contains(c.b.Bytes()[from:], c.marker) {
		c.at = time.Since(c.start)
	}
	if c.echo != nil {
		c.echo.Write(p)
	}
	return len(p), nil
}

func (c *consoleLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func (c *consoleLog) markedAt() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
