package otelcoltest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// commandDir is the collector command, relative to the module root.
const commandDir = "internal/otelcoltest/cmd/testcollector"

const buildTimeout = 15 * time.Minute

var built struct {
	once sync.Once
	bin  string
	err  error
}

// Build returns the path of the test Collector binary, building it on the
// first call of the process unless the cache has it. When it can't be
// built the test is skipped (failed when CI=true).
func Build(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		start := time.Now()
		built.bin, built.err = build()
		if built.err == nil {
			t.Logf("otelcoltest: collector ready in %v: %s", time.Since(start).Round(time.Millisecond), built.bin)
		}
	})
	if built.err != nil {
		testenv.SkipOrFail(t, "otelcoltest: can't build the test collector: %v", built.err)
	}
	return built.bin
}

// cacheDir is $NGXPROBE_CACHE, or /var/cache/ngxprobe.
func cacheDir() string {
	if d := os.Getenv("NGXPROBE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/ngxprobe"
}

// moduleRoot is the directory of ngxprobe's go.mod: above this source
// file, else above the working directory.
func moduleRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, commandDir, "main.go")); err == nil {
				if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
					return dir, nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("the module root (go.mod and " + commandDir + ") not found")
}

// goTool is the go command: on PATH, else the one of this Go's GOROOT.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("no go command on PATH or in GOROOT")
	}
	return p, nil
}

// buildKey hashes what the binary is made of: go.mod, go.sum, the
// command's files and the Go version.
func buildKey(root, goCmd string) (string, error) {
	h := sha256.New()
	out, err := exec.Command(goCmd, "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	fmt.Fprintf(h, "go %s\n", bytes.TrimSpace(out))
	files := []string{"go.mod", "go.sum"}
	err = filepath.WalkDir(filepath.Join(root, commandDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files = append(files, rel)
		return err
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files[2:])
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:8], nil
}

// build makes $cache/otelcol-<hash8>/testcollector, once across
// processes: a flock serializes builders, .complete marks a finished
// build.
func build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goCmd, err := goTool()
	if err != nil {
		return "", err
	}
	key, err := buildKey(root, goCmd)
	if err != nil {
		return "", err
	}
	cache := cacheDir()
	dir := filepath.Join(cache, "otelcol-"+key)
	bin := filepath.Join(dir, "testcollector")
	complete := filepath.Join(dir, ".complete")
	if _, err := os.Stat(complete); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".otelcol-"+key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(complete); err == nil {
		return bin, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	start := time.Now()
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-o", tmp, "./"+commandDir)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./%s: %v\n%s", commandDir, err, tail(stderr.String(), 30))
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	info := fmt.Sprintf("key: %s\nroot: %s\nbuild_seconds: %.1f\nbuilt: %s\n", key, root, time.Since(start).Seconds(), time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, "BUILD_INFO"), []byte(info), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(complete, nil, 0o644); err != nil {
		return "", err
	}
	return bin, nil
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
