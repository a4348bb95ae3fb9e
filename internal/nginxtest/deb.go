package nginxtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// Where Debian's packages put nginx.
const (
	// VariantDeb is the Install.Variant of PackagedInstall.
	VariantDeb = "deb"
	// PackagedBinary is the nginx package's stripped executable.
	PackagedBinary = "/usr/sbin/nginx"
	// PackagedModulesDir holds the libnginx-mod-* packages' dynamic modules,
	// e.g. ngx_stream_module.so (libnginx-mod-stream).
	PackagedModulesDir = "/usr/lib/nginx/modules"
)

const (
	aptTimeout  = 15 * time.Minute
	policyRCD   = "/usr/sbin/policy-rc.d"
	runNginxPID = "/run/nginx.pid" // the packaged nginx's default pid file
)

// DebBuild is Debian's nginx source package built by build-deb.sh with its
// own debian/rules (dpkg-buildpackage -b): stripped binaries, -dbgsym
// packages, and the dynamic modules in libnginx-mod-* packages.
type DebBuild struct {
	// Dir is the cached result directory, $NGXPROBE_CACHE/nginx-deb-<hash8>:
	// the package files, build.log and BUILD_INFO.
	Dir string
	// Version is the Debian version of every package, e.g. "1.22.1-9+deb12u9".
	Version string
	// Debs maps each package name to its file in Dir: "nginx",
	// "nginx-common", "libnginx-mod-stream", "libnginx-mod-mail", ... and
	// the -dbgsym ones ("nginx-dbgsym", "libnginx-mod-stream-dbgsym", ...).
	Debs map[string]string
	// SourceDir is the source tree dpkg-buildpackage built in (objects of
	// the binaries in debian/build-*/objs).
	SourceDir string

	control map[string]debControl // by package name
}

// debControl is what InstallDebs needs from a package's control file.
type debControl struct {
	version  string
	depends  [][]string // Pre-Depends and Depends: clauses of alternative names
	provides []string
	md5sums  string // DEBIAN/md5sums, to tell this build from another of the same version
}

// Deb returns the file of the package name, failing the test when the build
// made no such package.
func (b DebBuild) Deb(t testing.TB, name string) string {
	t.Helper()
	f, ok := b.Debs[name]
	if !ok {
		t.Fatalf("nginxtest: the nginx %s build has no package %q (have %s)", b.Version, name, strings.Join(b.Names(), " "))
	}
	return f
}

// Names returns the package names of the build, sorted.
func (b DebBuild) Names() []string {
	names := make([]string, 0, len(b.Debs))
	for n := range b.Debs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var debBuild struct {
	once sync.Once
	b    DebBuild
	err  error
}

// BuildDeb runs build-deb.sh, which builds Debian's nginx source package with
// dpkg-buildpackage, and returns the packages. The script caches its result
// on disk (cold: about a minute on 2 cores); BuildDeb runs it once per process.
// When the packages can't be built the test is skipped (failed when CI=true).
func BuildDeb(t testing.TB) DebBuild {
	t.Helper()
	debBuild.once.Do(func() {
		start := time.Now()
		debBuild.b, debBuild.err = runDebBuild()
		if debBuild.err == nil {
			t.Logf("nginxtest: nginx %s packages ready in %v: %s", debBuild.b.Version, time.Since(start).Round(time.Millisecond), debBuild.b.Dir)
		}
	})
	if debBuild.err != nil {
		testenv.SkipOrFail(t, "nginxtest: can't build the nginx packages: %v", debBuild.err)
	}
	return debBuild.b
}

// DebScript returns the path of build-deb.sh: $NGXPROBE_BUILD_DEB, or the
// one beside build-nginx.sh (see BuildScript), whose functions it loads.
func DebScript() (string, error) {
	if p := os.Getenv("NGXPROBE_BUILD_DEB"); p != "" {
		return p, nil
	}
	p, err := BuildScript()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(p), "build-deb.sh"), nil
}

func runDebBuild() (DebBuild, error) {
	script, err := DebScript()
	if err != nil {
		return DebBuild{}, err
	}
	dir, err := runScript(script, "result directory", 80)
	if err != nil {
		return DebBuild{}, err
	}
	return readDebBuild(dir)
}

// readDebBuild lists a build-deb.sh result directory.
func readDebBuild(dir string) (DebBuild, error) {
	b := DebBuild{Dir: dir, Debs: map[string]string{}, control: map[string]debControl{}}
	info := readFile(filepath.Join(dir, "BUILD_INFO"))
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "version: "); ok {
			b.Version = strings.TrimSpace(v)
		}
	}
	if b.Version == "" {
		return DebBuild{}, fmt.Errorf("%s: BUILD_INFO names no version", dir)
	}
	if src, _ := filepath.Glob(filepath.Join(dir, "build", "nginx-*")); len(src) > 0 {
		b.SourceDir = src[0]
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	ddebs, _ := filepath.Glob(filepath.Join(dir, "*.ddeb"))
	for _, f := range append(files, ddebs...) {
		c, name, err := readControl(f)
		if err != nil {
			return DebBuild{}, err
		}
		b.Debs[name] = f
		b.control[name] = c
		registerDeb(name, c.version, f)
	}
	for _, want := range []string{"nginx", "nginx-dbgsym"} {
		if _, ok := b.Debs[want]; !ok {
			return DebBuild{}, fmt.Errorf("%s: no %s package", dir, want)
		}
	}
	return b, nil
}

// readControl reads the fields InstallDebs needs from a .deb.
func readControl(file string) (debControl, string, error) {
	out, err := exec.Command("dpkg-deb", "-f", file, "Package", "Version", "Pre-Depends", "Depends", "Provides").Output()
	if err != nil {
		return debControl{}, "", fmt.Errorf("dpkg-deb -f %s: %w", file, err)
	}
	var c debControl
	var name string
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			name = v
		case "Version":
			c.version = v
		case "Pre-Depends", "Depends":
			for _, clause := range strings.Split(v, ",") {
				var alts []string
				for _, alt := range strings.Split(clause, "|") {
					alts = append(alts, relationName(alt))
				}
				c.depends = append(c.depends, alts)
			}
		case "Provides":
			for _, p := range strings.Split(v, ",") {
				c.provides = append(c.provides, relationName(p))
			}
		}
	}
	if name == "" || c.version == "" {
		return debControl{}, "", fmt.Errorf("%s: no Package or Version in its control file", file)
	}
	// A package without files has no md5sums; that is not an error.
	sums, _ := exec.Command("dpkg-deb", "-I", file, "md5sums").Output()
	c.md5sums = string(sums)
	return c, name, nil
}

// relationName is the package name of one relation: "libc6 (>= 2.34)" and
// "perl:any" are libc6 and perl.
func relationName(rel string) string {
	f := strings.Fields(rel)
	if len(f) == 0 {
		return ""
	}
	name, _, _ := strings.Cut(f[0], ":")
	return name
}

// debFiles remembers every package file of a build this process has seen,
// by "name=version", so that RemoveDebs can put a package back from it.
var (
	debFilesMu sync.Mutex
	debFiles   = map[string]string{}
)

func registerDeb(name, version, file string) {
	debFilesMu.Lock()
	debFiles[name+"="+version] = file
	debFilesMu.Unlock()
}

func knownDeb(name, version string) (string, bool) {
	debFilesMu.Lock()
	defer debFilesMu.Unlock()
	f, ok := debFiles[name+"="+version]
	return f, ok
}

// selection returns the build's packages that installing names needs: the
// names themselves and, recursively, every dependency that a package of the
// same build satisfies (libnginx-mod-stream needs the nginx-abi that this
// build's nginx provides, nginx needs this build's nginx-common), so that
// none of them comes from the archive instead. Dependencies outside the
// build are apt-get's.
func (b DebBuild) selection(names []string) ([]string, error) {
	providers := map[string]string{}
	for name, c := range b.control {
		providers[name] = name
		for _, p := range c.provides {
			if _, ok := providers[p]; !ok {
				providers[p] = name
			}
		}
	}
	seen := map[string]bool{}
	var out []string
	var add func(name string, why string) error
	add = func(name, why string) error {
		if seen[name] {
			return nil
		}
		c, ok := b.control[name]
		if !ok {
			return fmt.Errorf("the nginx %s build has no package %q%s (have %s)", b.Version, name, why, strings.Join(b.Names(), " "))
		}
		seen[name] = true
		out = append(out, name)
		for _, clause := range c.depends {
			for _, alt := range clause {
				if p, ok := providers[alt]; ok {
					if err := add(p, " (a dependency of "+name+")"); err != nil {
						return err
					}
					break
				}
			}
		}
		return nil
	}
	for _, n := range names {
		if err := add(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// installedVersion is the version of the installed package name, "" when
// it is not installed.
func installedVersion(name string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name).Output()
	if err != nil {
		return ""
	}
	st, v, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if st != "installed" {
		return ""
	}
	return v
}

// installedFrom reports whether the installed package name is the one in
// this build: same version and same files (the archive's package of the same
// version is another build, with other build-ids).
func (b DebBuild) installedFrom(name string) bool {
	c := b.control[name]
	if installedVersion(name) != c.version {
		return false
	}
	if c.md5sums == "" {
		return true
	}
	const info = "/var/lib/dpkg/info/"
	installed := readFile(info + name + ".md5sums")
	if installed == "" {
		installed = readFile(info + name + ":" + debArch() + ".md5sums")
	}
	return sortedLines(installed) == sortedLines(c.md5sums)
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

var debArch = sync.OnceValue(func() string {
	out, _ := exec.Command("dpkg", "--print-architecture").Output()
	return strings.TrimSpace(string(out))
})

// InstallDebs installs the build's packages names with apt-get (like
// `apt-get install ./nginx_....deb`), so that they live at their real paths
// (/usr/sbin/nginx, /usr/lib/nginx/modules/ngx_stream_module.so,
// /usr/lib/debug/.build-id/...). Dependencies that this build has come from
// it; the others from the Debian archive. Packages already installed from
// this very build are left alone.
//
// No service starts: /usr/sbin/policy-rc.d denies it (exit 101) for the
// duration, and anything the install still started (an nginx in
// /run/nginx.pid, a new listener on port 80) is stopped. t.Cleanup purges
// what the install added, archive dependencies included, and puts back from
// the archive what it replaced. Needs root; installs run one at a time, also
// across test processes.
func InstallDebs(t testing.TB, b DebBuild, names ...string) {
	t.Helper()
	RequireRoot(t)
	usePackages(t)
	sel, err := b.selection(names)
	if err != nil {
		t.Fatalf("nginxtest: InstallDebs: %v", err)
	}
	var files []string
	for _, name := range sel {
		if !b.installedFrom(name) {
			files = append(files, b.Debs[name])
		}
	}
	if len(files) == 0 {
		return
	}
	unlock := lockPackages(t)
	defer unlock()
	leftovers := existingPaths(debLeftovers)
	res, err := withoutServices(t, func() (aptResult, error) { return aptInstall(files) })
	if err != nil {
		t.Fatalf("nginxtest: InstallDebs %s: %v", strings.Join(names, " "), err)
	}
	t.Logf("nginxtest: installed %s (new: %s)", strings.Join(sel, " "), strings.Join(res.fresh, " "))
	t.Cleanup(func() {
		unlock := lockPackages(t)
		defer unlock()
		restorePackages(t, res)
		removeNew(t, leftovers, debLeftovers)
	})
}

// RemoveDebs purges the installed packages names (dpkg --purge; those not
// installed are skipped), with services denied as in InstallDebs, e.g. to
// check that no file under /usr/lib/debug belongs to nginx any more.
// Packages that depend on them must be in names too. t.Cleanup installs
// them again at the same version: from a build this process has seen, or
// else from the archive.
func RemoveDebs(t testing.TB, names ...string) {
	t.Helper()
	RequireRoot(t)
	usePackages(t)
	unlock := lockPackages(t)
	defer unlock()
	var gone []string
	restore := map[string]string{} // name -> version it had
	for _, name := range names {
		if v := installedVersion(name); v != "" {
			gone = append(gone, name)
			restore[name] = v
		}
	}
	if len(gone) == 0 {
		return
	}
	_, err := withoutServices(t, func() (aptResult, error) {
		out, err := runLogged(exec.Command("dpkg", append([]string{"--purge"}, gone...)...))
		return aptResult{}, errOut(err, out)
	})
	if err != nil {
		t.Fatalf("nginxtest: RemoveDebs %s: %v", strings.Join(gone, " "), err)
	}
	t.Logf("nginxtest: purged %s", strings.Join(gone, " "))
	t.Cleanup(func() {
		unlock := lockPackages(t)
		defer unlock()
		restorePackages(t, aptResult{replaced: restore})
	})
}

// aptResult is what an install changed.
type aptResult struct {
	fresh    []string          // packages that were not installed before
	replaced map[string]string // package -> the version it replaced
}

var (
	// dpkg's lines as apt-get passes them on end in "\r\n".
	selectingRE = regexp.MustCompile(`(?m)^Selecting previously unselected package ([^ :]+)(?::\S+)?\.\r?$`)
	unpackingRE = regexp.MustCompile(`(?m)^Unpacking ([^ :]+)(?::\S+)? \(([^)]*)\) over \(([^)]*)\)`)
)

// aptInstall installs targets (package files, or name=version from the
// archive) with their dependencies; once more after apt-get update when the
// package lists are stale.
func aptInstall(targets []string) (aptResult, error) {
	args := []string{"install", "-y", "-q", "--no-install-recommends", "--reinstall", "--allow-downgrades",
		"-o", "DPkg::Lock::Timeout=600",
		"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"}
	out, err := apt(append(args, targets...)...)
	if err != nil {
		if upd, uerr := apt("update", "-q", "-o", "DPkg::Lock::Timeout=600"); uerr != nil {
			return aptResult{}, errOut(err, out+upd)
		}
		out, err = apt(append(args, targets...)...)
	}
	res := aptResult{replaced: map[string]string{}}
	for _, m := range selectingRE.FindAllStringSubmatch(out, -1) {
		res.fresh = append(res.fresh, m[1])
	}
	for _, m := range unpackingRE.FindAllStringSubmatch(out, -1) {
		res.replaced[m[1]] = m[3]
	}
	return res, errOut(err, out)
}

func apt(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), aptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	return runLogged(cmd)
}

// runLogged runs cmd non-interactively in the C locale (its output is
// parsed) and returns stdout and stderr together.
func runLogged(cmd *exec.Cmd) (string, error) {
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", "LANG=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func errOut(err error, out string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%v\n%s", err, tail(out, 40))
}

// restorePackages undoes an install: purges what it added, and installs
// again the versions it replaced (from a known build's file, else from the
// archive). Failures are reported, not fatal: the test itself is done.
func restorePackages(t testing.TB, res aptResult) {
	var purge []string
	for _, name := range res.fresh {
		if installedVersion(name) != "" {
			purge = append(purge, name)
		}
	}
	if len(purge) > 0 {
		_, err := withoutServices(t, func() (aptResult, error) {
			out, err := runLogged(exec.Command("dpkg", append([]string{"--purge"}, purge...)...))
			return aptResult{}, errOut(err, out)
		})
		if err != nil {
			t.Errorf("nginxtest: cleanup: dpkg --purge %s: %v", strings.Join(purge, " "), err)
		} else {
			t.Logf("nginxtest: cleanup: purged %s", strings.Join(purge, " "))
		}
	}
	var targets []string
	for name, v := range res.replaced {
		if f, ok := knownDeb(name, v); ok {
			targets = append(targets, f)
		} else {
			targets = append(targets, name+"="+v)
		}
	}
	sort.Strings(targets)
	if len(targets) > 0 {
		if _, err := withoutServices(t, func() (aptResult, error) { return aptInstall(targets) }); err != nil {
			t.Errorf("nginxtest: cleanup: can't put back %s: %v", strings.Join(targets, " "), err)
		} else {
			t.Logf("nginxtest: cleanup: put back %s", strings.Join(targets, " "))
		}
	}
}

// debLeftovers are made by nginx-common's postinst and not removed by its
// purge; cleanup removes them when they were not there before.
var debLeftovers = []string{"/var/www/html/index.nginx-debian.html", "/var/www/html", "/var/www"}

func existingPaths(paths []string) map[string]bool {
	m := map[string]bool{}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			m[p] = true
		}
	}
	return m
}

// removeNew removes the paths (files, then empty directories, in order)
// that did not exist before.
func removeNew(t testing.TB, before map[string]bool, paths []string) {
	for _, p := range paths {
		if before[p] {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Logf("nginxtest: cleanup: %v", err)
		}
	}
}

// usePackages holds the system's nginx packages for t, and for every test
// that uses them in this process, until the last of them ends: another
// test binary (go test runs packages side by side) that installs or
// removes them waits, rather than purging a package a running test uses.
// The first user in the process takes an exclusive flock; the others
// count.
func usePackages(t testing.TB) {
	t.Helper()
	inUse.Lock()
	defer inUse.Unlock()
	if inUse.users == 0 {
		dir := os.Getenv("NGXPROBE_CACHE")
		if dir == "" {
			dir = "/var/cache/ngxprobe"
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, ".packages-in-use.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatal(err)
		}
		inUse.file = f
	}
	inUse.users++
	// Registered before the caller's own cleanups: it runs after them.
	t.Cleanup(func() {
		inUse.Lock()
		defer inUse.Unlock()
		if inUse.users--; inUse.users == 0 {
			_ = syscall.Flock(int(inUse.file.Fd()), syscall.LOCK_UN)
			inUse.file.Close()
		}
	})
}

var inUse struct {
	sync.Mutex
	users int
	file  *os.File
}

// packagesMu and the flock in lockPackages serialize package changes in this
// process and across test processes (go test runs packages in parallel).
var packagesMu sync.Mutex

func lockPackages(t testing.TB) (unlock func()) {
	t.Helper()
	packagesMu.Lock()
	dir := os.Getenv("NGXPROBE_CACHE")
	if dir == "" {
		dir = "/var/cache/ngxprobe"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		packagesMu.Unlock()
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".packages.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		packagesMu.Unlock()
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		packagesMu.Unlock()
		t.Fatal(err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		packagesMu.Unlock()
	}
}

// policyDeny is the policy-rc.d that forbids every invoke-rc.d action.
const policyDeny = "#!/bin/sh\n# written by ngxprobe's nginxtest while it installs packages: no service starts\nexit 101\n"

// withoutServices runs change (a dpkg or apt-get run) with policy-rc.d
// denying every service action, then stops whatever the packages started
// anyway, and puts policy-rc.d back as it was.
func withoutServices(t testing.TB, change func() (aptResult, error)) (aptResult, error) {
	t.Helper()
	old, oldErr := os.ReadFile(policyRCD)
	var oldMode os.FileMode = 0o755
	if st, err := os.Stat(policyRCD); err == nil {
		oldMode = st.Mode().Perm()
	}
	if err := os.WriteFile(policyRCD+".ngxprobe", []byte(policyDeny), 0o755); err != nil {
		return aptResult{}, err
	}
	if err := os.Rename(policyRCD+".ngxprobe", policyRCD); err != nil {
		return aptResult{}, err
	}
	defer func() {
		var err error
		if oldErr != nil {
			err = os.Remove(policyRCD)
		} else if err = os.WriteFile(policyRCD+".ngxprobe", old, oldMode); err == nil {
			err = os.Rename(policyRCD+".ngxprobe", policyRCD)
		}
		if err != nil {
			t.Errorf("nginxtest: restoring %s: %v", policyRCD, err)
		}
	}()
	before := serviceState()
	res, err := change()
	stopStrays(t, before)
	return res, err
}

// services is what a package install could have started: the processes
// listening on TCP port 80, and the pid in the packaged nginx's pid file.
type services struct {
	port80 map[int]bool
	runPID int
}

func serviceState() services {
	s := services{port80: map[int]bool{}}
	for _, pid := range listeners(80) {
		s.port80[pid] = true
	}
	if b, err := os.ReadFile(runNginxPID); err == nil {
		s.runPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return s
}

// stopStrays stops what is new since before: an nginx master in
// /run/nginx.pid and any new listener on port 80, with its children.
func stopStrays(t testing.TB, before services) {
	t.Helper()
	now := serviceState()
	var stray []int
	if now.runPID > 0 && now.runPID != before.runPID && processAlive(now.runPID) {
		stray = append(stray, now.runPID)
	}
	for pid := range now.port80 {
		if !before.port80[pid] && pid != os.Getpid() && pid != now.runPID {
			stray = append(stray, pid)
		}
	}
	for _, pid := range stray {
		t.Logf("nginxtest: stopping %d (%s), started by the package install", pid, procTitle(pid))
		stopProcessTree(pid)
	}
}

// processAlive reports whether pid runs (and is not a zombie).
func processAlive(pid int) bool {
	st := readFile("/proc/" + strconv.Itoa(pid) + "/status")
	return st != "" && !strings.Contains(st, "\nState:\tZ")
}

// stopProcessTree sends pid SIGTERM, waits up to stopTimeout, then kills it
// and its children.
func stopProcessTree(pid int) {
	kids := children(pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(stopTimeout)
	for processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range append(kids, pid) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// listeners returns the pids with a TCP socket listening on port (any
// address, IPv4 or IPv6), from /proc/net/tcp* and /proc/*/fd.
func listeners(port int) []int {
	inodes := map[string]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st ... uid timeout inode
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || fl[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(fl[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				inodes["socket:["+fl[9]+"]"] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return nil
	}
	var pids []int
	for _, pid := range allPIDs() {
		fdDir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			if link, err := os.Readlink(fdDir + fd.Name()); err == nil && inodes[link] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// allPIDs returns the id of every process, from /proc.
func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// PackagedInstall is the nginx of the installed nginx package (see
// InstallDebs): Binary is /usr/sbin/nginx, stripped, its DWARF in
// nginx-dbgsym; Prefix is /usr (it holds sbin/nginx; the package's own
// --prefix is /usr/share/nginx). SourceDir is empty.
func PackagedInstall() Install {
	return Install{Variant: VariantDeb, Prefix: "/usr", Binary: PackagedBinary}
}

// StartPackaged starts the packaged /usr/sbin/nginx, installed by
// InstallDebs, as Start does: its config, pid file, logs and the http
// *_temp_path folders are in the server's t.TempDir(), not in the
// package's /etc/nginx, /run or /var/lib/nginx. Dynamic modules must be
// loaded: cfg.Modules = []string{"ngx_stream_module"} for a stream{} block.
func StartPackaged(t testing.TB, cfg Config) *Server {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat(PackagedBinary); err != nil {
		t.Fatalf("nginxtest: StartPackaged: %v (InstallDebs(t, build, \"nginx\") first)", err)
	}
	for _, m := range cfg.Modules {
		if _, err := os.Stat(modulePath(m)); err != nil {
			t.Fatalf("nginxtest: StartPackaged: module %s: %v (install its libnginx-mod-* package)", m, err)
		}
	}
	return Start(t, PackagedInstall(), cfg)
}

// modulePath is the load_module path of a Config.Modules entry.
func modulePath(m string) string {
	if strings.Contains(m, "/") {
		return m
	}
	if !strings.HasSuffix(m, ".so") {
		m += ".so"
	}
	return filepath.Join(PackagedModulesDir, m)
}
