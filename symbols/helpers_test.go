package symbols_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// fixtureDir holds every binary the tests compile; TestMain creates it and
// removes it at the end, so that each fixture variant is built once per run.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "symbols-fixtures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	closeOpened()
	os.RemoveAll(dir)
	os.Exit(code)
}

// skipOrFail: in CI a missing tool is a broken environment, not a reason
// to test less.
var skipOrFail = testenv.SkipOrFail

// requireTools returns the path of each tool, skipping (CI: failing) the
// test when one is missing.
func requireTools(t testing.TB, names ...string) []string {
	t.Helper()
	var paths []string
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			skipOrFail(t, "%s is not installed (%v)", name, err)
		}
		paths = append(paths, p)
	}
	return paths
}

// run runs a tool and returns its stdout; a failure fails the test.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

type buildResult struct {
	once sync.Once
	path string
	out  string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*buildResult{}
)

// buildFixture compiles testdata/<src> with gcc and flags into fixtureDir,
// once per (src, flags) for the whole test run, and returns the binary.
func buildFixture(t testing.TB, src string, flags ...string) string {
	t.Helper()
	requireTools(t, "gcc")
	key := src + " " + strings.Join(flags, " ")
	buildsMu.Lock()
	r, ok := builds[key]
	if !ok {
		r = &buildResult{}
		builds[key] = r
	}
	n := len(builds)
	buildsMu.Unlock()
	r.once.Do(func() {
		name := fmt.Sprintf("%s-%d", strings.TrimSuffix(src, ".c"), n)
		r.path = filepath.Join(fixtureDir, name)
		args := append(append([]string{}, flags...), "-o", r.path, filepath.Join("testdata", src))
		out, err := exec.Command("gcc", args...).CombinedOutput()
		r.out, r.err = string(out), err
	})
	if r.err != nil {
		t.Fatalf("gcc %s %s: %v\n%s", strings.Join(flags, " "), src, r.err, r.out)
	}
	return r.path
}

var (
	openedMu sync.Mutex
	opened   = map[string]*symbols.Binary{}
)

// openBinary opens a binary with default options, once per path; the
// Binary is shared by the tests (it is read-only once indexed).
func openBinary(t testing.TB, path string) *symbols.Binary {
	t.Helper()
	openedMu.Lock()
	defer openedMu.Unlock()
	if b, ok := opened[path]; ok {
		return b
	}
	b, err := symbols.Open(path, &symbols.OpenOptions{DebugRoot: emptyDebugRoot()})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	opened[path] = b
	return b
}

// emptyDebugRoot keeps /usr/lib/debug out of the tests.
func emptyDebugRoot() string {
	d := filepath.Join(fixtureDir, "empty-debug-root")
	os.MkdirAll(d, 0o755)
	return d
}

func closeOpened() {
	openedMu.Lock()
	defer openedMu.Unlock()
	for _, b := range opened {
		b.Close()
	}
}
