package debuginfod_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/debuginfod"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// The tests in this file run the client against the real debuginfod
// (elfutils' server, Debian package "debuginfod", which also ships
// debuginfod-find) on loopback, indexing a directory of ELF files.

// requireTool finds a program, or skips the test (fails it with CI=true).
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.SkipOrFail(t, "%s is not installed (apt-get install debuginfod gcc): %v", name, err)
	}
	return p
}

// realServer is a debuginfod process.
type realServer struct {
	URL  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	once sync.Once
}

// startDebuginfod runs debuginfod on a free port, scanning dir for ELF
// files, and waits until it serves buildID. It is stopped at the end of
// the test, or by Stop.
func startDebuginfod(t testing.TB, dir, buildID string) *realServer {
	t.Helper()
	bin := requireTool(t, "debuginfod")
	port := nginxtest.FreePort(t)
	s := &realServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port), log: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "-p", fmt.Sprint(port), "-d", filepath.Join(t.TempDir(), "db.sqlite"),
		"-F", "-t", "0", "-g", "0", dir)
	s.cmd.Env = cleanEnv() // no DEBUGINFOD_URLS: it must not federate
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)

	url := s.URL + "/buildid/" + buildID + "/debuginfo"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("debuginfod did not serve %s within 30s (last: %v, %v):\n%s", url, resp, err, s.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s) and waits.
func (s *realServer) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	})
}

// cleanEnv is the environment without any DEBUGINFOD_ variable.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DEBUGINFOD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// compileHello builds a small C program with -g and a build-id into dir.
func compileHello(t testing.TB, dir string) (path, buildID string) {
	t.Helper()
	gcc := requireTool(t, "gcc")
	src := filepath.Join(t.TempDir(), "hello.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "hello")
	if out, err := exec.Command(gcc, "-g", "-O0", "-Wl,--build-id=sha1", "-o", path, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return path, fileBuildID(t, path)
}

// debuginfodFind runs elfutils' client: "debuginfod-find debuginfo ID"
// with the cache and servers given; it returns the path it prints.
func debuginfodFind(t testing.TB, cache, urls, typ, buildID string) (string, error) {
	t.Helper()
	bin := requireTool(t, "debuginfod-find")
	cmd := exec.Command(bin, typ, buildID)
	cmd.Env = cleanEnv("DEBUGINFOD_CACHE_PATH="+cache, "DEBUGINFOD_URLS="+urls)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("debuginfod-find %s %s: %v: %s", typ, buildID, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func TestRealServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin, id := compileHello(t, dir)
	srv := startDebuginfod(t, dir, id)
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}

	c := newClient(t, srv.URL)
	path, err := c.Debuginfo(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the indexed %s (%v)", path, bin, err)
	}
	if got := fileBuildID(t, path); got != id {
		t.Errorf("cached build-id %s, want %s", got, id)
	}
	exe, err := c.Executable(t.Context(), id)
	if err != nil || exe != filepath.Join(c.CacheDir, id, "executable") {
		t.Fatalf("executable: %s, %v", exe, err)
	}
	_, err = c.Debuginfo(t.Context(), otherID)
	if !errors.Is(err, debuginfod.ErrNotFound) {
		t.Errorf("unknown build-id: %v, want ErrNotFound", err)
	}

	// elfutils, with the server down, finds our files in the cache (with
	// DEBUGINFOD_URLS unset it would not look at the cache at all).
	srv.Stop()
	down := closedPort(t)
	for _, typ := range []string{"debuginfo", "executable"} {
		got, err := debuginfodFind(t, c.CacheDir, down, typ, id)
		if err != nil || got != filepath.Join(c.CacheDir, id, typ) {
			t.Errorf("elfutils does not find our %s: %q, %v", typ, got, err)
		}
	}
	// Nor do we need the server.
	if again, err := c.Debuginfo(t.Context(), id); err != nil || again != path {
		t.Errorf("with the server down: %q, %v; want the cached %s", again, err, path)
	}
}

// TestElfutilsCache: what debuginfod-find cached, we use without a
// request; and both caches look the same.
func TestElfutilsCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, id := compileHello(t, dir)
	srv := startDebuginfod(t, dir, id)

	theirs := filepath.Join(t.TempDir(), "elfutils")
	for _, typ := range []string{"debuginfo", "executable"} {
		if _, err := debuginfodFind(t, theirs, srv.URL, typ, id); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t, srv.URL)
	for _, typ := range []debuginfod.FileType{debuginfod.TypeDebuginfo, debuginfod.TypeExecutable} {
		if _, err := c.Fetch(t.Context(), debuginfod.Request{BuildID: id, Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	ours, theirsList := cacheFiles(t, c.CacheDir), cacheFiles(t, theirs)
	t.Logf("elfutils' cache:\n%s", strings.Join(theirsList, "\n"))
	if strings.Join(ours, "\n") != strings.Join(theirsList, "\n") {
		t.Errorf("our cache:\n%s\nelfutils':\n%s", strings.Join(ours, "\n"), strings.Join(theirsList, "\n"))
	}
	for _, typ := range []string{"debuginfo", "executable"} {
		a, _ := os.Stat(filepath.Join(c.CacheDir, id, typ))
		b, _ := os.Stat(filepath.Join(theirs, id, typ))
		if a == nil || b == nil || !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s: mtimes differ: ours %v, elfutils' %v", typ, a, b)
		}
	}

	srv.Stop()
	c.CacheDir = theirs
	c.URLs = []string{closedPort(t)}
	for _, typ := range []debuginfod.FileType{debuginfod.TypeDebuginfo, debuginfod.TypeExecutable} {
		path, err := c.Fetch(t.Context(), debuginfod.Request{BuildID: id, Type: typ})
		if err != nil || path != filepath.Join(theirs, id, string(typ)) {
			t.Errorf("elfutils' cached %s: %q, %v", typ, path, err)
		}
	}
}

// TestRealServerNginx fetches the test nginx (a few MiB of DWARF) with
// progress lines.
func TestRealServerNginx(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	id := fileBuildID(t, inst.Binary)
	srv := startDebuginfod(t, filepath.Dir(inst.Binary), id)

	var progress bytes.Buffer
	c := newClient(t, srv.URL)
	c.Progress = &progress
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	path, err := c.Fetch(ctx, debuginfod.Request{BuildID: id, Name: inst.Binary})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", progress.String())
	want, _ := os.ReadFile(inst.Binary)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s differs from %s (%v)", path, inst.Binary, err)
	}
	if !strings.Contains(progress.String(), "debuginfod: fetched debuginfo of "+inst.Binary+" (build-id "+id+"): ") {
		t.Errorf("no final progress line")
	}
}
