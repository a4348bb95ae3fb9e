package debuginfod_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/debuginfod"
)

// fuzzMaxSize keeps the fuzzer's downloads small: an answer may repeat
// its body up to 255 times, past this bound.
const fuzzMaxSize = 1 << 20

// FuzzDebuginfod fetches from a loopback server that answers with a
// fuzzed status, headers and body (repeated, for an endless body bounded
// by the input), with a Content-Length that may lie: Fetch returns an
// error or the path of a cached file with the requested build-id, and
// never leaves a temporary file or a bad cache entry. Its seeds
// (testdata/fuzz/FuzzDebuginfod) are a real debug file served right,
// cut, with another build-id, and wrong answers of every kind;
// TestGenerateFuzzSeeds writes them.
func FuzzDebuginfod(f *testing.F) {
	f.Fuzz(func(t *testing.T, buildID string, status uint16, header string, body []byte, declared int64, repeat uint8) {
		if status < 100 || status > 999 {
			status = 200 // net/http refuses other codes
		}
		srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
			for _, line := range strings.Split(header, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					w.Header().Add(strings.TrimSpace(k), strings.TrimSpace(v))
				}
			}
			if declared >= 0 {
				w.Header().Set("Content-Length", fmt.Sprint(declared))
			}
			w.WriteHeader(int(status))
			for range int(repeat) + 1 {
				if _, err := w.Write(body); err != nil {
					return
				}
			}
		})
		cache := filepath.Join(t.TempDir(), "cache")
		c := &debuginfod.Client{URLs: []string{srv.URL}, CacheDir: cache, MaxSize: fuzzMaxSize, Timeout: 5 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		path, err := c.Fetch(ctx, debuginfod.Request{BuildID: buildID})
		if ctx.Err() != nil {
			t.Fatalf("Fetch took longer than 20 s: %v", err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Fetch: empty error")
			}
			if errors.Is(err, debuginfod.ErrInvalidBuildID) {
				return
			}
			requireNoEntry(t, cache)
			return
		}
		id := strings.ToLower(buildID)
		if want := filepath.Join(cache, id, "debuginfo"); path != want {
			t.Fatalf("Fetch = %s, want %s", path, want)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o400 || fi.Size() > fuzzMaxSize {
			t.Fatalf("cached file %s: %v, %v", path, fi, err)
		}
		if got := fileBuildID(t, path); got != id {
			t.Fatalf("cached file has build-id %s, want %s", got, id)
		}
		for _, f := range cacheFiles(t, cache) {
			if !strings.HasPrefix(f, "cache_clean_interval_s ") && !strings.HasPrefix(f, id+"/debuginfo ") && !strings.HasPrefix(f, id+" ") {
				t.Errorf("left in the cache: %s", f)
			}
		}
	})
}

// TestGenerateFuzzSeeds writes FuzzDebuginfod's seed corpus around a real
// debug file (a small C program's, split off with objcopy
// --only-keep-debug, as a dbgsym package holds it). It runs only when
// asked:
//
//	NGXPROBE_FUZZ_SEEDS=1 go test ./debuginfod -run TestGenerateFuzzSeeds
func TestGenerateFuzzSeeds(t *testing.T) {
	if os.Getenv("NGXPROBE_FUZZ_SEEDS") == "" {
		t.Skip("writes testdata/fuzz; set NGXPROBE_FUZZ_SEEDS=1 to run it")
	}
	dir := t.TempDir()
	bin, id := compileHello(t, dir)
	debug := bin + ".debug"
	if out, err := exec.Command(requireTool(t, "objcopy"), "--only-keep-debug", bin, debug).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	file, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(file))
	const ok = "Content-Type: application/octet-stream\nLast-Modified: Mon, 30 Nov 2026 12:00:00 GMT"
	type seed struct {
		name     string
		id       string
		status   uint16
		header   string
		body     []byte
		declared int64
		repeat   uint8
	}
	seeds := []seed{
		{"good", id, 200, ok + "\nX-Debuginfod-Size: " + fmt.Sprint(n), file, n, 0},
		{"good-chunked", strings.ToUpper(id), 200, ok, file, -1, 0},
		{"cut-short", id, 200, ok, file[:n/2], n, 0},
		{"longer-than-declared", id, 200, ok, file, n / 2, 0},
		{"other-build-id", strings.Repeat("ab", 20), 200, ok, file, n, 0},
		{"not-elf", id, 200, "Content-Type: text/html", []byte("<html><body>Welcome!</body></html>"), -1, 0},
		{"endless", id, 200, ok + "\nX-Debuginfod-Size: 12", file, -1, 255},
		{"declared-huge", id, 200, ok, file, 1 << 40, 0},
		{"gzip-that-is-not", id, 200, "Content-Encoding: gzip", file, -1, 0},
		{"not-found", id, 404, "", []byte("Not found"), -1, 0},
		{"too-large", id, 406, "", nil, -1, 0},
		{"server-error", id, 503, "Retry-After: 1", bytes.Repeat([]byte("busy "), 100), -1, 0},
		{"redirect-loop", id, 302, "Location: /buildid/" + id + "/debuginfo", nil, -1, 0},
		{"bad-build-id", "../../etc/passwd", 200, ok, file, n, 0},
	}
	out := filepath.Join("testdata", "fuzz", "FuzzDebuginfod")
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		text := fmt.Sprintf("go test fuzz v1\nstring(%q)\nuint16(%d)\nstring(%q)\n[]byte(%q)\nint64(%d)\nuint8(%d)\n", s.id, s.status, s.header, s.body, s.declared, s.repeat)
		if err := os.WriteFile(filepath.Join(out, s.name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDefaultMaxSize: a client with MaxSize unset refuses a file over
// DefaultMaxSize, asks the server for no more (X-DEBUGINFOD-MAXSIZE), and
// says how to raise the bound.
func TestDefaultMaxSize(t *testing.T) {
	var asked string
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		asked = r.Header.Get("X-DEBUGINFOD-MAXSIZE")
		w.Header().Set("Content-Length", fmt.Sprint(debuginfod.DefaultMaxSize+1))
		w.WriteHeader(http.StatusOK) // and no body: the client must not wait for it
	})
	cache := t.TempDir()
	c := &debuginfod.Client{URLs: []string{srv.URL}, CacheDir: cache}
	_, err := c.Fetch(context.Background(), debuginfod.Request{BuildID: testID})
	if !errors.Is(err, debuginfod.ErrTooLarge) || !strings.Contains(err.Error(), "MaxSize") || !strings.Contains(err.Error(), "raise it") {
		t.Errorf("Fetch: %v, want ErrTooLarge saying how to raise MaxSize", err)
	}
	if asked != fmt.Sprint(debuginfod.DefaultMaxSize) {
		t.Errorf("X-DEBUGINFOD-MAXSIZE: %q, want %d", asked, debuginfod.DefaultMaxSize)
	}
	requireNoEntry(t, cache)
}
