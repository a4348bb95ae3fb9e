package nginxtest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPackagedConfigModules(t *testing.T) {
	got := Config{Modules: []string{"ngx_stream_module", "ngx_mail_module.so", "/opt/x/y.so"}}.render("/d")
	want := `error_log "/d/error.log" info;
load_module "/usr/lib/nginx/modules/ngx_stream_module.so";
load_module "/usr/lib/nginx/modules/ngx_mail_module.so";
load_module "/opt/x/y.so";
events {`
	if !strings.Contains(got, want) {
		t.Errorf("nginx.conf lacks\n%s\nin\n%s", want, got)
	}
	if strings.Contains(Config{}.render("/d"), "load_module") {
		t.Errorf("load_module without Modules")
	}
}

// BuildID reads the same id as readelf -n.
func TestDebBuildID(t *testing.T) {
	path, err := exec.LookPath("ls")
	if err != nil {
		t.Skip(err)
	}
	out, err := exec.Command("readelf", "-n", path).Output()
	if err != nil {
		t.Skipf("readelf: %v", err)
	}
	m := regexp.MustCompile(`Build ID: ([0-9a-f]+)`).FindSubmatch(out)
	if m == nil {
		t.Skipf("%s has no build-id", path)
	}
	if id, err := BuildID(path); err != nil || id != string(m[1]) {
		t.Errorf("BuildID(%s) = %q, %v; readelf says %s", path, id, err, m[1])
	}
	if got := DebugFileByBuildID("35549aba"); got != "/usr/lib/debug/.build-id/35/549aba.debug" {
		t.Errorf("DebugFileByBuildID = %s", got)
	}
	// A Go test binary has a Go build id note but no GNU one (unless -B).
	self, _ := os.Executable()
	if id, err := BuildID(self); err == nil {
		t.Logf("%s has a GNU build-id %s (linked with -B?)", self, id)
	} else if !errors.Is(err, errNoBuildID) {
		t.Errorf("BuildID(self): %v", err)
	}
}

// TestDebPackaged checks that the packaged nginx is what people run:
// Debian's own build, stripped, its DWARF in -dbgsym packages (after
// dh_dwz), the stream module a dynamic .so, and debuginfod serving the
// debug info by build-id. Every package it installs is purged at the end.
func TestDebPackaged(t *testing.T) {
	RequireRoot(t)
	b := BuildDeb(t)
	var files []string
	for _, n := range b.Names() {
		files = append(files, filepath.Base(b.Debs[n]))
	}
	t.Logf("nginx %s, %d packages in %s:\n  %s", b.Version, len(files), b.Dir, strings.Join(files, "\n  "))
	for _, name := range []string{"nginx", "nginx-common", "libnginx-mod-stream", "libnginx-mod-mail",
		"nginx-dbgsym", "libnginx-mod-stream-dbgsym", "libnginx-mod-mail-dbgsym"} {
		b.Deb(t, name)
	}

	installed := []string{"nginx", "nginx-common", "libnginx-mod-stream", "nginx-dbgsym", "libnginx-mod-stream-dbgsym"}
	before := map[string]string{}
	for _, name := range installed {
		before[name] = installedVersion(name)
	}
	t.Run("installed", func(t *testing.T) {
		InstallDebs(t, b, "nginx", "libnginx-mod-stream", "nginx-dbgsym", "libnginx-mod-stream-dbgsym")
		for _, name := range installed {
			if !b.installedFrom(name) {
				t.Fatalf("%s is not installed from %s (installed version %q)", name, b.Debs[name], installedVersion(name))
			}
		}
		stream := filepath.Join(PackagedModulesDir, "ngx_stream_module.so")
		nginxID := checkStripped(t, PackagedBinary)
		streamID := checkStripped(t, stream)

		t.Run("dbgsym", func(t *testing.T) {
			for _, c := range []struct{ pkg, id string }{{"nginx-dbgsym", nginxID}, {"libnginx-mod-stream-dbgsym", streamID}} {
				debug := DebugFileByBuildID(c.id)
				if id, err := BuildID(debug); err != nil || id != c.id {
					t.Fatalf("%s: build-id %q, %v; want %s", debug, id, err, c.id)
				}
				if owner := dpkgOwner(debug); owner != c.pkg {
					t.Errorf("%s belongs to %q, want %s", debug, owner, c.pkg)
				}
				f, err := elf.Open(debug)
				if err != nil {
					t.Fatal(err)
				}
				if f.Section(".debug_info") == nil {
					t.Errorf("%s has no .debug_info", debug)
				}
				f.Close()
				t.Logf("%s (%s): %s", debug, c.pkg, dwzReport(t, debug))
			}
			// Which -dbgsym packages got a dwz multifile (an alt file under
			// /usr/lib/debug/.dwz shared by several of their ELF files).
			for _, n := range b.Names() {
				if !strings.HasSuffix(n, "-dbgsym") {
					continue
				}
				out, err := exec.Command("dpkg-deb", "-c", b.Debs[n]).Output()
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range strings.Split(string(out), "\n") {
					if f := strings.Fields(line); len(f) > 0 && strings.Contains(line, "/usr/lib/debug/.dwz/") && strings.HasSuffix(line, ".debug") {
						t.Logf("%s has a dwz multifile: %s", n, f[len(f)-1])
					}
				}
			}
		})

		t.Run("no service started", func(t *testing.T) {
			if pids := listeners(80); len(pids) > 0 {
				t.Errorf("listening on port 80 after the install: %v", pids)
			}
			for _, pid := range allPIDs() {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == PackagedBinary {
					t.Errorf("nginx %d (%s) runs after the install", pid, procTitle(pid))
				}
			}
		})

		t.Run("stream proxy", func(t *testing.T) {
			backend := echoBackend(t)
			streamPort := FreePort(t)
			srv := StartPackaged(t, Config{
				Modules: []string{"ngx_stream_module"},
				Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", streamPort, backend),
			})
			worker := srv.WorkerPIDs()[0]
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", worker)); exe != PackagedBinary {
				t.Errorf("worker %d runs %q, want %s", worker, exe, PackagedBinary)
			}
			if maps := readFile(fmt.Sprintf("/proc/%d/maps", worker)); !strings.Contains(maps, stream) {
				t.Errorf("worker %d has not mapped %s", worker, stream)
			}

			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", streamPort), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "ping through ngx_stream_module\n"); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "ping through ngx_stream_module\n" {
				t.Fatalf("stream proxy echoed %q, %v\n%s", line, err, srv.diag())
			}
		})

		t.Run("debuginfod", func(t *testing.T) {
			d := StartDebuginfod(t, b.Dir)
			t.Logf("debuginfod: %s", strings.Join(d.Args, " "))
			got, err := d.Fetch(nginxID, "debuginfo")
			if err != nil {
				t.Fatalf("%v\n%s", err, tail(d.Log(), 20))
			}
			want, err := os.ReadFile(DebugFileByBuildID(nginxID))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("debuginfod's debuginfo for %s (%d bytes) differs from %s (%d bytes)", nginxID, len(got), DebugFileByBuildID(nginxID), len(want))
			}
			exe, err := d.Fetch(nginxID, "executable")
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := os.ReadFile(PackagedBinary); !bytes.Equal(exe, want) {
				t.Errorf("debuginfod's executable for %s differs from %s", nginxID, PackagedBinary)
			}
			if _, err := d.Fetch(streamID, "debuginfo"); err != nil {
				t.Errorf("stream module: %v", err)
			}
			if _, err := d.Fetch(strings.Repeat("0", 40), "debuginfo"); err == nil {
				t.Errorf("a made-up build-id was found")
			}
		})

		t.Run("remove dbgsym", func(t *testing.T) {
			t.Run("removed", func(t *testing.T) {
				RemoveDebs(t, "nginx-dbgsym", "libnginx-mod-stream-dbgsym")
				if _, err := os.Stat(DebugFileByBuildID(nginxID)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s after RemoveDebs: %v", DebugFileByBuildID(nginxID), err)
				}
				if files := nginxDebugFiles(t); len(files) > 0 {
					t.Errorf("files under /usr/lib/debug still belong to nginx packages: %v", files)
				}
			})
			// RemoveDebs's cleanup put them back.
			if !b.installedFrom("nginx-dbgsym") {
				t.Errorf("nginx-dbgsym not back after RemoveDebs's cleanup")
			}
			if _, err := os.Stat(DebugFileByBuildID(nginxID)); err != nil {
				t.Error(err)
			}
		})
	})

	// InstallDebs's cleanup left the packages as they were.
	for _, name := range installed {
		if v := installedVersion(name); v != before[name] {
			t.Errorf("%s: version %q after the test, %q before", name, v, before[name])
		}
	}
	if before["nginx"] == "" {
		if _, err := os.Stat(PackagedBinary); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the test: %v", PackagedBinary, err)
		}
	}
}

// checkStripped checks that path is a stripped ELF file, as dh_strip leaves
// it (no .debug_info, no .symtab, a build-id and a .gnu_debuglink to
// <id[2:]>.debug), and returns its build-id.
func checkStripped(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range []string{".debug_info", ".symtab"} {
		if f.Section(s) != nil {
			t.Errorf("%s has %s: not stripped", path, s)
		}
	}
	id, err := BuildID(path)
	if err != nil {
		t.Fatal(err)
	}
	link := f.Section(".gnu_debuglink")
	if link == nil {
		t.Fatalf("%s has no .gnu_debuglink", path)
	}
	data, err := link.Data()
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := bytes.Cut(data, []byte{0})
	if string(name) != id[2:]+".debug" {
		t.Errorf("%s: .gnu_debuglink %q, want %s.debug", path, name, id[2:])
	}
	t.Logf("%s: stripped, build-id %s, .gnu_debuglink %s", path, id, name)
	return id
}

// dwzReport says, from readelf, what dh_dwz made of a debug file: its
// compile and partial units, and whether it has a .gnu_debugaltlink to a
// dwz multifile.
func dwzReport(t *testing.T, path string) string {
	t.Helper()
	// no-follow-links: with the dbgsym installed, readelf would also dump
	// the file the .gnu_debuglink leads to, which is path itself.
	cmd := exec.Command("readelf", "--debug-dump=info,no-follow-links", path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("readelf: %v", err)
	}
	var cus, pus, imports int
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "(DW_TAG_compile_unit)"):
			cus++
		case strings.Contains(line, "(DW_TAG_partial_unit)"):
			pus++
		case strings.Contains(line, "(DW_TAG_imported_unit)"):
			imports++
		}
	}
	_ = cmd.Wait() // readelf complains on stderr about the missing interpreter
	if cus == 0 {
		t.Errorf("%s: readelf shows no compile unit", path)
	}
	alt := "no .gnu_debugaltlink"
	if sections, err := exec.Command("readelf", "-S", "-W", path).Output(); err == nil && bytes.Contains(sections, []byte(".gnu_debugaltlink")) {
		s, _ := exec.Command("readelf", "--string-dump=.gnu_debugaltlink", path).Output()
		alt = ".gnu_debugaltlink " + strings.Join(strings.Fields(string(s)), " ")
	}
	return fmt.Sprintf("%d compile units, %d partial units (DW_TAG_partial_unit), %d DW_TAG_imported_unit, %s", cus, pus, imports, alt)
}

// dpkgOwner is the package that owns path ("" if none).
func dpkgOwner(path string) string {
	out, err := exec.Command("dpkg", "-S", path).Output()
	if err != nil {
		return ""
	}
	owner, _, _ := strings.Cut(string(out), ":")
	return owner
}

// nginxDebugFiles lists the files under /usr/lib/debug that an installed
// package with "nginx" in its name owns.
func nginxDebugFiles(t *testing.T) []string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Status} ${Package}\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, line := range strings.Split(string(out), "\n") {
		st, pkg, _ := strings.Cut(line, " ")
		if st != "installed" || !strings.Contains(pkg, "nginx") {
			continue
		}
		list, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Split(string(list), "\n") {
			if strings.HasPrefix(f, "/usr/lib/debug/") {
				if st, err := os.Stat(f); err == nil && !st.IsDir() {
					files = append(files, pkg+": "+f)
				}
			}
		}
	}
	return files
}

// echoBackend is a TCP server on 127.0.0.1 that writes back what it reads.
// It returns its "host:port"; t.Cleanup closes it.
func echoBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

// withoutServices puts its policy-rc.d in place for the change, restores
// the old one after, and stops a port-80 listener the change started, as
// an nginx started by a postinst would be.
func TestDebWithoutServices(t *testing.T) {
	RequireRoot(t)
	if os.Getenv("NGINXTEST_LISTEN80") == "1" {
		t.Skip("helper process")
	}
	if pids := listeners(80); len(pids) > 0 {
		t.Skipf("port 80 is in use by %v", pids)
	}
	old, oldErr := os.ReadFile(policyRCD)
	var helper *exec.Cmd
	exited := make(chan error, 1)
	_, err := withoutServices(t, func() (aptResult, error) {
		if got := readFile(policyRCD); got != policyDeny {
			t.Errorf("policy-rc.d during the change:\n%s", got)
		}
		if out, err := exec.Command(policyRCD, "nginx", "start").CombinedOutput(); exitCode(err) != 101 {
			t.Errorf("policy-rc.d nginx start: %v %s, want exit 101", err, out)
		}
		helper = exec.Command(os.Args[0], "-test.run=^TestDebListen80Helper$")
		helper.Env = append(os.Environ(), "NGINXTEST_LISTEN80=1")
		if err := helper.Start(); err != nil {
			return aptResult{}, err
		}
		go func() { exited <- helper.Wait() }()
		if !waitFor(10*time.Second, func() bool { return len(listeners(80)) > 0 }) {
			t.Errorf("helper %d is not listening on port 80", helper.Process.Pid)
		}
		return aptResult{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = helper.Process.Kill()
		t.Fatalf("the port-80 listener %d was not stopped", helper.Process.Pid)
	}
	now, nowErr := os.ReadFile(policyRCD)
	if !bytes.Equal(now, old) || (oldErr == nil) != (nowErr == nil) {
		t.Errorf("policy-rc.d not restored: before %q (%v), after %q (%v)", old, oldErr, now, nowErr)
	}
}

// TestDebListen80Helper is TestDebWithoutServices's stray service: with
// NGINXTEST_LISTEN80=1 it listens on 127.0.0.1:80 until killed.
func TestDebListen80Helper(t *testing.T) {
	if os.Getenv("NGINXTEST_LISTEN80") != "1" {
		t.Skip("only run by TestDebWithoutServices")
	}
	l, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	time.Sleep(time.Minute)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
