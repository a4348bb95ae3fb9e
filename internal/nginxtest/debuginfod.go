package nginxtest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

const debuginfodTimeout = 60 * time.Second

// Debuginfod is a running debuginfod server (elfutils', Debian package
// debuginfod) that serves the ELF files and debug info inside the .deb and
// .ddeb archives of some directories, by build-id.
type Debuginfod struct {
	// URL is the server's base URL, http://127.0.0.1:PORT, for
	// DEBUGINFOD_URLS; /buildid/<id>/debuginfo is a debug file.
	URL string
	// Dir is its t.TempDir(): the database db.sqlite, debuginfod.log and
	// tmp/ (its TMPDIR, where it unpacks archives).
	Dir string
	// Args is its command line.
	Args []string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	client  *http.Client
}

// StartDebuginfod starts debuginfod on a free port, scanning the .deb and
// .ddeb archives under dirs (-U) once, with its own database in a
// t.TempDir() and no upstream servers (DEBUGINFOD_URLS unset, so it never
// federates). It returns once the first scan is done: every archive
// indexed. (Debian's 0.188 has no option to bind one address: it listens on
// all of them, IPv4 and IPv6; tests use 127.0.0.1.) t.Cleanup stops it.
// Without debuginfod or bsdtar (packages debuginfod and libarchive-tools,
// see setup-deps.sh deb) the test is skipped (failed when CI=true).
func StartDebuginfod(t testing.TB, dirs ...string) *Debuginfod {
	t.Helper()
	if len(dirs) == 0 {
		t.Fatal("nginxtest: StartDebuginfod: no directory to scan")
	}
	bin, err := exec.LookPath("debuginfod")
	if err != nil {
		testenv.SkipOrFail(t, "nginxtest: no debuginfod (apt-get install debuginfod, or setup-deps.sh deb): %v", err)
	}
	// -U unpacks the archives with `bsdtar -O -x -f - data.tar*`; without it
	// every archive "scans" and nothing is found.
	if _, err := exec.LookPath("bsdtar"); err != nil {
		testenv.SkipOrFail(t, "nginxtest: no bsdtar for debuginfod -U (apt-get install libarchive-tools): %v", err)
	}
	archives := 0
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() && (strings.HasSuffix(p, ".deb") || strings.HasSuffix(p, ".ddeb")) {
				archives++
			}
			return nil
		})
	}

	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	d := &Debuginfod{
		URL:    fmt.Sprintf("http://127.0.0.1:%d", port),
		Dir:    dir,
		done:   make(chan struct{}),
		client: &http.Client{Timeout: 30 * time.Second},
	}
	// -U: scan .deb/.ddeb archives; -t 0: no rescans after the first;
	// -g 0: no grooming; -v: log each archive.
	d.Args = append([]string{bin, "-U", "-d", filepath.Join(dir, "db.sqlite"), "-p", strconv.Itoa(port), "-t", "0", "-g", "0", "-v"}, dirs...)
	logf, err := os.Create(filepath.Join(dir, "debuginfod.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(d.Args[0], d.Args[1:]...)
	d.cmd.Dir = dir
	d.cmd.Stdout = logf
	d.cmd.Stderr = logf
	d.cmd.Env = append(withoutDebuginfodEnv(os.Environ()), "TMPDIR="+tmp)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("nginxtest: start debuginfod: %v", err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop(t) })

	deadline := time.Now().Add(debuginfodTimeout)
	for {
		select {
		case <-d.done:
			t.Fatalf("nginxtest: debuginfod exited during start: %v\n%s\n--- log:\n%s", d.waitErr, strings.Join(d.Args, " "), tail(d.Log(), 40))
		default:
		}
		m, err := d.Metrics()
		if err == nil && scanDone(m) {
			found := m[`found_debuginfo_total{source=".deb archive"}`] + m[`found_executable_total{source=".deb archive"}`]
			scanned := m[`scanned_files_total{source=".deb archive"}`]
			if archives > 0 && (scanned < float64(archives) || found == 0) {
				t.Fatalf("nginxtest: debuginfod scanned %v of %d archives in %s and found %v ELF files\n%s\n--- log:\n%s",
					scanned, archives, strings.Join(dirs, " "), found, strings.Join(d.Args, " "), tail(d.Log(), 40))
			}
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginxtest: debuginfod has not indexed %s after %v (metrics: %v, %v)\n%s\n--- log:\n%s",
				strings.Join(dirs, " "), debuginfodTimeout, m, err, strings.Join(d.Args, " "), tail(d.Log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scanDone reports whether the metrics show the first scan over: the
// server ready, one traversal of the paths finished, and no archive queued
// or being scanned.
func scanDone(m map[string]float64) bool {
	return m["ready"] == 1 &&
		m[`thread_work_total{role="traverse"}`] >= 1 &&
		m[`thread_busy{role="traverse"}`] == 0 &&
		m[`thread_work_pending{role="scan"}`] == 0 &&
		m[`thread_busy{role="scan"}`] == 0
}

// withoutDebuginfodEnv drops DEBUGINFOD_URLS and the other DEBUGINFOD_*
// variables (client cache, timeouts) from env.
func withoutDebuginfodEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DEBUGINFOD_") {
			out = append(out, kv)
		}
	}
	return out
}

// Metrics returns /metrics (Prometheus text) as name{labels} -> value.
func (d *Debuginfod) Metrics() (map[string]float64, error) {
	resp, err := d.client.Get(d.URL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// Fetch returns the server's artifact of buildID: kind is "debuginfo"
// (the separate debug file), "executable", or "source/<absolute path>".
// Anything but 200 is an error.
func (d *Debuginfod) Fetch(buildID, kind string) ([]byte, error) {
	resp, err := d.client.Get(d.URL + "/buildid/" + buildID + "/" + strings.TrimPrefix(kind, "/"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("debuginfod %s/buildid/%s/%s: %s", d.URL, buildID, kind, resp.Status)
	}
	return body, nil
}

// Log returns debuginfod's output so far.
func (d *Debuginfod) Log() string { return readFile(filepath.Join(d.Dir, "debuginfod.log")) }

// stop is the t.Cleanup of StartDebuginfod: SIGTERM, then SIGKILL for its
// process group.
func (d *Debuginfod) stop(t testing.TB) {
	pid := d.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Logf("nginxtest: debuginfod %d did not stop within %v, killing it", pid, stopTimeout)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-d.done
	if t.Failed() {
		t.Logf("nginxtest: debuginfod %s\n--- log (tail):\n%s", strings.Join(d.Args, " "), tail(d.Log(), 30))
	}
}
