package nginxtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// Where Debian's OpenResty packages put things.
const (
	// LuaModule is lua-nginx-module (package libnginx-mod-http-lua), a
	// Config.Modules entry: PackagedModulesDir/ngx_http_lua_module.so.
	LuaModule = "ngx_http_lua_module"
	// NDKModule is ngx_devel_kit (package libnginx-mod-http-ndk), which
	// LuaModule needs loaded before it: PackagedModulesDir/ndk_http_module.so.
	NDKModule = "ndk_http_module"
	// LuaSharedDir is where lua-resty-core and lua-resty-lrucache install
	// resty/core.lua, resty/lrucache.lua, ngx/*.lua (the module's compiled-in
	// default path, LUA_DEFAULT_PATH in its debian/rules, is the same).
	LuaSharedDir = "/usr/share/lua/5.1"
	// LuaPackagePath is the lua_package_path of LuaConfig: LuaSharedDir,
	// then (";;") the default path.
	LuaPackagePath = LuaSharedDir + "/?.lua;;"
	// LuaJITSoname is the soname of OpenResty's LuaJIT fork in package
	// libluajit2-5.1-2, the same as upstream LuaJIT's libluajit-5.1-2 (the
	// two packages conflict). See LuaJITLibrary for its path.
	LuaJITSoname = "libluajit-5.1.so.2"
)

// OpenRestyPackages are what InstallOpenResty installs by default: the
// packaged nginx, ngx_devel_kit, lua-nginx-module and OpenResty's LuaJIT,
// each with its -dbgsym package. The Debian archive's lua-resty-core and
// lua-resty-lrucache come with them (libnginx-mod-http-lua depends on them:
// lua-nginx-module 0.10.x does not start without resty.core).
var OpenRestyPackages = []string{
	"nginx", "nginx-dbgsym",
	"libnginx-mod-http-ndk", "libnginx-mod-http-ndk-dbgsym",
	"libnginx-mod-http-lua", "libnginx-mod-http-lua-dbgsym",
	"libluajit2-5.1-2", "libluajit2-5.1-2-dbgsym",
}

// OpenRestyBuild is OpenResty's parts built by build-openresty.sh as Debian
// builds them (dpkg-buildpackage -b of the source packages luajit2,
// libnginx-mod-http-ndk and libnginx-mod-http-lua), the two nginx modules
// against the packages of Nginx: stripped, with -dbgsym packages.
type OpenRestyBuild struct {
	// Dir is the cached result directory,
	// $NGXPROBE_CACHE/openresty-deb-<hash8>: the package files, build.log
	// and BUILD_INFO.
	Dir string
	// Versions maps each source package ("luajit2",
	// "libnginx-mod-http-ndk", "libnginx-mod-http-lua") to its Debian
	// version, e.g. "2.1-20230119-1".
	Versions map[string]string
	// Debs maps each package name of this build to its file in Dir:
	// "libluajit2-5.1-2", "libluajit2-5.1-dev", "luajit2",
	// "libnginx-mod-http-lua", ... and the -dbgsym ones.
	Debs map[string]string
	// Nginx is the nginx build (build-deb.sh) the modules were built
	// against; they load only into its nginx.
	Nginx DebBuild
	// ModuleSignature is the nginx module signature that the modules and
	// Nginx's nginx share, e.g. "8,4,8,0011111111010111001111111111111111".
	ModuleSignature string

	control   map[string]debControl
	conflicts map[string][]string // package -> the names it conflicts with
}

// Deb returns the file of the package name (of this build or of Nginx),
// failing the test when there is none.
func (b OpenRestyBuild) Deb(t testing.TB, name string) string {
	t.Helper()
	if f, ok := b.Debs[name]; ok {
		return f
	}
	return b.Nginx.Deb(t, name)
}

// Names returns the package names of this build (not Nginx's), sorted.
func (b OpenRestyBuild) Names() []string {
	return DebBuild{Debs: b.Debs}.Names()
}

// Packages is this build and Nginx as one DebBuild, for InstallDebs: a
// package's dependencies on nginx come from Nginx. Dir is b.Dir.
func (b OpenRestyBuild) Packages() DebBuild {
	all := DebBuild{
		Dir:       b.Dir,
		Version:   b.Nginx.Version,
		Debs:      map[string]string{},
		SourceDir: b.Nginx.SourceDir,
		control:   map[string]debControl{},
	}
	for _, from := range []DebBuild{b.Nginx, {Debs: b.Debs, control: b.control}} {
		for n, f := range from.Debs {
			all.Debs[n] = f
			all.control[n] = from.control[n]
		}
	}
	return all
}

// openRestyBuild runs build-openresty.sh once per process.
var openRestyBuild = sync.OnceValues(func() (OpenRestyBuild, error) {
	script, err := OpenRestyScript()
	dir := ""
	if err == nil {
		dir, err = runScript(script, "result directory", 80)
	}
	if err != nil {
		return OpenRestyBuild{}, err
	}
	return readOpenRestyBuild(dir)
})

// BuildOpenResty runs build-openresty.sh, which builds Debian's luajit2,
// libnginx-mod-http-ndk and libnginx-mod-http-lua source packages with
// dpkg-buildpackage against the nginx of build-deb.sh (which it runs
// first), and returns the packages. The script caches its result on disk
// (cold: about two minutes on 2 cores, a minute and a half with the nginx
// packages cached); it runs once per process. When the packages can't be
// built the test is skipped (failed when CI=true).
func BuildOpenResty(t testing.TB) OpenRestyBuild {
	t.Helper()
	start := time.Now()
	b, err := openRestyBuild()
	if err != nil {
		testenv.SkipOrFail(t, "nginxtest: can't build the OpenResty packages: %v", err)
	}
	t.Logf("nginxtest: OpenResty packages %v (%v): %s", b.Versions, time.Since(start).Round(time.Millisecond), b.Dir)
	return b
}

// OpenRestyScript returns the path of build-openresty.sh:
// $NGXPROBE_BUILD_OPENRESTY, or the one beside build-deb.sh (see DebScript),
// which it runs and whose functions it loads.
func OpenRestyScript() (string, error) {
	if p := os.Getenv("NGXPROBE_BUILD_OPENRESTY"); p != "" {
		return p, nil
	}
	deb, err := DebScript()
	return filepath.Join(filepath.Dir(deb), "build-openresty.sh"), err
}

// readOpenRestyBuild lists a build-openresty.sh result directory and the
// nginx-deb directory its BUILD_INFO names.
func readOpenRestyBuild(dir string) (OpenRestyBuild, error) {
	b := OpenRestyBuild{Dir: dir, Versions: map[string]string{}, Debs: map[string]string{},
		control: map[string]debControl{}, conflicts: map[string][]string{}}
	var nginxDir string
	for _, line := range strings.Split(readFile(filepath.Join(dir, "BUILD_INFO")), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "version": // "luajit2: 2.1-20230119-1 34 s"
			if src, rest, ok := strings.Cut(v, ": "); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					b.Versions[src] = f[0]
				}
			}
		case "nginx-deb":
			nginxDir = strings.TrimSpace(v)
		case "module-signature":
			b.ModuleSignature = strings.TrimSpace(v)
		}
	}
	if nginxDir == "" || len(b.Versions) == 0 {
		return OpenRestyBuild{}, fmt.Errorf("%s: BUILD_INFO names no nginx-deb directory or no version", dir)
	}
	var err error
	if b.Nginx, err = readDebBuild(nginxDir); err != nil {
		return OpenRestyBuild{}, err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.*deb")) // .deb and .ddeb
	for _, f := range files {
		name, c, conflicts, err := readDebConflicts(f)
		if err != nil {
			return OpenRestyBuild{}, err
		}
		b.Debs[name], b.control[name], b.conflicts[name] = f, c, conflicts
		registerDeb(name, c.version, f)
	}
	for _, want := range OpenRestyPackages {
		if _, ok := b.Debs[want]; !ok && b.Nginx.Debs[want] == "" {
			return OpenRestyBuild{}, fmt.Errorf("%s: no %s package", dir, want)
		}
	}
	return b, nil
}

// readDebConflicts reads what readControl reads, and the names in the
// package's Conflicts field.
func readDebConflicts(file string) (string, debControl, []string, error) {
	c, name, err := readControl(file)
	if err != nil {
		return "", debControl{}, nil, err
	}
	out, err := exec.Command("dpkg-deb", "-f", file, "Conflicts").Output()
	if err != nil {
		return "", debControl{}, nil, fmt.Errorf("dpkg-deb -f %s Conflicts: %w", file, err)
	}
	var conflicts []string
	for _, rel := range strings.Split(string(out), ",") {
		if n := relationName(rel); n != "" {
			conflicts = append(conflicts, n)
		}
	}
	return name, c, conflicts, nil
}

// InstallOpenResty installs the packages names (OpenRestyPackages when
// none) of b and of b.Nginx with InstallDebs, and with them their
// dependencies from the Debian archive: lua-resty-core and
// lua-resty-lrucache for libnginx-mod-http-lua. An installed package that
// one of them conflicts with (the archive's libluajit-5.1-2, which wrk
// uses, and libluajit-5.1-common) is removed by the install; t.Cleanup puts
// it back, before InstallDebs's cleanup purges the rest. Needs root.
func InstallOpenResty(t testing.TB, b OpenRestyBuild, names ...string) {
	t.Helper()
	RequireRoot(t)
	if len(names) == 0 {
		names = OpenRestyPackages
	}
	all := b.Packages()
	sel, err := all.selection(names)
	if err != nil {
		t.Fatalf("nginxtest: InstallOpenResty: %v", err)
	}
	selected := map[string]bool{}
	for _, n := range sel {
		selected[n] = true
	}
	back := map[string]string{} // conflicting package -> its installed version
	for _, n := range sel {
		for _, c := range b.conflicts[n] {
			if v := installedVersion(c); v != "" && !selected[c] {
				back[c] = v
			}
		}
	}
	installed := false
	defer func() {
		if !installed { // InstallDebs failed: apt-get may have removed them all the same
			putBackPackages(t, back)
		}
	}()
	InstallDebs(t, all, names...)
	installed = true
	if len(back) > 0 {
		t.Cleanup(func() { putBackPackages(t, back) })
	}
	if selected["libnginx-mod-http-lua"] {
		for _, p := range []string{"lua-resty-core", "lua-resty-lrucache"} {
			if installedVersion(p) == "" {
				t.Fatalf("nginxtest: InstallOpenResty: %s is not installed with libnginx-mod-http-lua", p)
			}
		}
	}
}

// putBackPackages installs again the versions (package -> version) that
// are no longer installed: from a build this process has seen, else from
// the archive. Whatever that removes (what conflicts with them, and what
// depends on that alone) is purged.
func putBackPackages(t testing.TB, want map[string]string) {
	var targets []string
	for name, v := range want {
		if installedVersion(name) == v {
			continue
		}
		if f, ok := knownDeb(name, v); ok {
			targets = append(targets, f)
		} else {
			targets = append(targets, name+"="+v)
		}
	}
	if len(targets) == 0 {
		return
	}
	sort.Strings(targets)
	unlock := lockPackages(t)
	defer unlock()
	_, err := withoutServices(t, func() (aptResult, error) {
		out, err := apt(append([]string{"install", "-y", "-q", "--no-install-recommends", "--purge", "--allow-downgrades",
			"-o", "DPkg::Lock::Timeout=600",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"}, targets...)...)
		return aptResult{}, errOut(err, out)
	})
	if err != nil {
		t.Errorf("nginxtest: cleanup: can't put back %s: %v", strings.Join(targets, " "), err)
		return
	}
	t.Logf("nginxtest: cleanup: put back %s", strings.Join(targets, " "))
}

// LuaConfig returns cfg for the packaged nginx with lua-nginx-module:
// NDKModule and LuaModule loaded (before cfg.Modules), and
// lua_package_path set to LuaPackagePath (before cfg.HTTP), so that
// `require "resty.core"` finds Debian's lua-resty-core.
//
//	srv := nginxtest.StartPackaged(t, nginxtest.LuaConfig(nginxtest.Config{HTTP: fmt.Sprintf(
//		"server { listen 127.0.0.1:%d; location / { content_by_lua_block { ngx.say(jit.version) } } }", port)}))
func LuaConfig(cfg Config) Config {
	cfg.Modules = append([]string{NDKModule, LuaModule}, cfg.Modules...)
	cfg.HTTP = fmt.Sprintf("    lua_package_path %q;\n%s", LuaPackagePath, cfg.HTTP)
	return cfg
}

// LuaJITLibrary returns the path of the installed libluajit2-5.1-2's
// LuaJITSoname link, e.g. /usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2
// (the file it links to is libluajit-5.1.so.2.1.0).
func LuaJITLibrary() (string, error) {
	out, err := exec.Command("dpkg-query", "-L", "libluajit2-5.1-2").Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-query -L libluajit2-5.1-2: %w (is it installed?)", err)
	}
	for _, f := range strings.Split(string(out), "\n") {
		if filepath.Base(f) == LuaJITSoname {
			return f, nil
		}
	}
	return "", fmt.Errorf("libluajit2-5.1-2 has no %s", LuaJITSoname)
}
