package debuginfod_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/debuginfod"
)

// The tests in this file run the client against a Go HTTP server on
// loopback that misbehaves on purpose (fault injection); server_test.go
// runs it against the real debuginfod.

func newClient(t testing.TB, urls ...string) *debuginfod.Client {
	return &debuginfod.Client{URLs: urls, CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: 5 * time.Second}
}

func TestFetchAndCacheHit(t *testing.T) {
	t.Parallel()
	body := testELF(testID, 1000)
	modified := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var gotPath atomic.Value
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		serveFile(body, modified)(w, r)
	})
	c := newClient(t, srv.URL+"/") // a trailing slash, as elfutils takes it

	path, err := c.Debuginfo(t.Context(), strings.ToUpper(testID))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/buildid/" + testID + "/debuginfo"; gotPath.Load() != want {
		t.Errorf("asked for %s, want %s", gotPath, want)
	}
	if want := filepath.Join(c.CacheDir, testID, "debuginfo"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("cached file differs from the served one (%v)", err)
	}
	want := []string{
		testID + " drwx------ 0",
		testID + "/debuginfo -r-------- " + itoa(int64(len(body))),
		"cache_clean_interval_s -rw-r--r-- 5",
	}
	if got := cacheFiles(t, c.CacheDir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cache:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if b, _ := os.ReadFile(filepath.Join(c.CacheDir, "cache_clean_interval_s")); string(b) != "86400" {
		t.Errorf("cache_clean_interval_s holds %q, want \"86400\"", b)
	}
	if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(modified) {
		t.Errorf("mtime %v, want Last-Modified %v (%v)", fi.ModTime(), modified, err)
	}

	srv.Close() // a hit must not need the server
	again, err := c.Debuginfo(t.Context(), testID)
	if err != nil || again != path {
		t.Fatalf("second fetch: %q, %v; want the cached %s", again, err, path)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestExecutable(t *testing.T) {
	t.Parallel()
	var asked atomic.Value
	body := testELF(testID, 10)
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.Path)
		serveFile(body, time.Now())(w, r)
	})
	c := newClient(t, srv.URL)
	path, err := c.Executable(t.Context(), testID)
	if err != nil {
		t.Fatal(err)
	}
	if asked.Load() != "/buildid/"+testID+"/executable" || path != filepath.Join(c.CacheDir, testID, "executable") {
		t.Errorf("asked %s, cached at %s", asked.Load(), path)
	}
}

// failures are servers that each fail a fetch one way.
func TestFailures(t *testing.T) {
	t.Parallel()
	good := testELF(testID, 4000)
	tests := []struct {
		name   string
		handle http.HandlerFunc
		client func(*debuginfod.Client)
		is     error  // errors.Is, when not nil
		msg    string // in the message
	}{
		{
			name:   "404",
			handle: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			is:     debuginfod.ErrNotFound,
			msg:    "debuginfo " + testID + ": not found on http://127.0.0.1:",
		},
		{
			name: "500",
			handle: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "database is locked", http.StatusInternalServerError)
			},
			msg: "HTTP 500 Internal Server Error: database is locked",
		},
		{
			name:   "another build-id",
			handle: serveFile(testELF(otherID, 4000), time.Now()),
			is:     debuginfod.ErrBuildIDMismatch,
			msg:    "the ELF file's build-id is " + otherID,
		},
		{
			name:   "not ELF",
			handle: serveFile([]byte("<html><body>Welcome to our proxy</body></html>"), time.Now()),
			is:     debuginfod.ErrBuildIDMismatch,
			msg:    `not an ELF file (it starts with "<htm")`,
		},
		{
			name:   "empty",
			handle: serveFile(nil, time.Now()),
			is:     debuginfod.ErrBuildIDMismatch,
			msg:    "not an ELF file (0 bytes)",
		},
		{
			name:   "corrupt ELF",
			handle: serveFile(append([]byte("\x7fELF"), bytes.Repeat([]byte{0xff}, 100)...), time.Now()),
			is:     debuginfod.ErrBuildIDMismatch,
			msg:    "not an ELF file",
		},
		{
			// The whole header, the end cut off: only a Content-Length
			// that is not there would tell.
			name:   "ELF cut short, no Content-Length",
			handle: chunked(good[:len(good)/2]),
			is:     debuginfod.ErrBuildIDMismatch,
			msg:    "not an ELF file",
		},
		{
			name: "truncated body",
			handle: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", itoa(int64(len(good))))
				w.Write(good[:len(good)-100])
			},
			msg: fmt.Sprintf("download cut short after %d of %d bytes: unexpected EOF", len(good)-100, len(good)),
		},
		{
			name:   "Content-Length over MaxSize",
			handle: serveFile(good, time.Now()),
			client: func(c *debuginfod.Client) { c.MaxSize = 4000 },
			is:     debuginfod.ErrTooLarge,
			msg:    fmt.Sprintf("%d bytes, MaxSize is 4000", len(good)),
		},
		{
			name:   "body over MaxSize",
			handle: chunked(good),
			client: func(c *debuginfod.Client) { c.MaxSize = 4000 },
			is:     debuginfod.ErrTooLarge,
			msg:    "more than MaxSize (4000 bytes)",
		},
		{
			name: "406 to X-DEBUGINFOD-MAXSIZE",
			handle: func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Debuginfod-Maxsize") != "4000" {
					http.Error(w, "no X-DEBUGINFOD-MAXSIZE", http.StatusBadRequest)
					return
				}
				http.Error(w, "File too large", http.StatusNotAcceptable)
			},
			client: func(c *debuginfod.Client) { c.MaxSize = 4000 },
			is:     debuginfod.ErrTooLarge,
		},
		{
			name:   "endless body over MaxSize",
			handle: endless,
			client: func(c *debuginfod.Client) { c.MaxSize = 10 << 20 },
			is:     debuginfod.ErrTooLarge,
		},
		{
			name: "stall before the response",
			handle: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			client: func(c *debuginfod.Client) { c.Timeout = 300 * time.Millisecond },
			is:     debuginfod.ErrTimeout,
			msg:    "timed out: no data for 300ms",
		},
		{
			name: "stall in the body",
			handle: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", itoa(int64(len(good))))
				w.Write(good[:1000])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			client: func(c *debuginfod.Client) { c.Timeout = 300 * time.Millisecond },
			is:     debuginfod.ErrTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t, tt.handle)
			c := newClient(t, srv.URL)
			if tt.client != nil {
				tt.client(c)
			}
			start := time.Now()
			path, err := c.Debuginfo(t.Context(), testID)
			if err == nil {
				t.Fatalf("fetched %s, want an error", path)
			}
			t.Logf("error after %v: %v", time.Since(start).Round(time.Millisecond), err)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error is not %v", tt.is)
			}
			if tt.is != debuginfod.ErrNotFound && errors.Is(err, debuginfod.ErrNotFound) {
				t.Errorf("error is ErrNotFound")
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), testID) {
				t.Errorf("error %q does not say %q and the build-id", err, tt.msg)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			requireNoEntry(t, c.CacheDir)
		})
	}
}

// chunked sends body without a Content-Length.
func chunked(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		w.Write(body[len(body)/2:])
	}
}

// endless sends an ELF header, then zeros until the client goes.
func endless(w http.ResponseWriter, r *http.Request) {
	w.Write(testELF(testID, 0)[:64])
	zeros := make([]byte, 64<<10)
	for r.Context().Err() == nil {
		if _, err := w.Write(zeros); err != nil {
			return
		}
	}
}

func TestEndlessBodyContext(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, endless)
	c := newClient(t, srv.URL)
	c.MaxSize = -1 // the context ends it, not DefaultMaxSize
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Debuginfo(ctx, testID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the context's deadline", err)
	}
	requireNoEntry(t, c.CacheDir)
}

func TestServerDown(t *testing.T) {
	t.Parallel()
	down := closedPort(t)
	c := newClient(t, down)
	_, err := c.Debuginfo(t.Context(), testID)
	if err == nil {
		t.Fatal("no error")
	}
	t.Log(err)
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, debuginfod.ErrNotFound) {
		t.Errorf("error %v: want ECONNREFUSED, not ErrNotFound", err)
	}
	for _, want := range []string{down + "/buildid/" + testID + "/debuginfo", "connection refused: is the server running?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	requireNoEntry(t, c.CacheDir)
}

func TestSeveralServers(t *testing.T) {
	t.Parallel()
	notFound := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	broken := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "oops", http.StatusInternalServerError)
	})
	wrong := newFakeServer(t, serveFile(testELF(otherID, 10), time.Now()))
	good := newFakeServer(t, serveFile(testELF(testID, 10), time.Now()))
	down := closedPort(t)

	t.Run("all 404", func(t *testing.T) {
		c := newClient(t, notFound.URL, notFound.URL+"/", notFound.URL+"/x")
		_, err := c.Debuginfo(t.Context(), testID)
		if !errors.Is(err, debuginfod.ErrNotFound) {
			t.Fatalf("error %v, want ErrNotFound", err)
		}
		// The same server twice (with and without "/") is asked once.
		if want := "not found on " + notFound.URL + ", " + notFound.URL + "/x"; !strings.HasSuffix(err.Error(), want) {
			t.Errorf("error %q, want it to end with %q", err, want)
		}
	})
	t.Run("404 and 500", func(t *testing.T) {
		c := newClient(t, notFound.URL, broken.URL, down)
		_, err := c.Debuginfo(t.Context(), testID)
		if err == nil || errors.Is(err, debuginfod.ErrNotFound) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("error %v: want not ErrNotFound, but ECONNREFUSED", err)
		}
		for _, want := range []string{notFound.URL + "/buildid/" + testID + "/debuginfo: not found", broken.URL, "HTTP 500", down} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
	t.Run("down, wrong file, then good", func(t *testing.T) {
		c := newClient(t, down, wrong.URL, notFound.URL, good.URL)
		path, err := c.Debuginfo(t.Context(), testID)
		if err != nil {
			t.Fatal(err)
		}
		if got := fileBuildID(t, path); got != testID {
			t.Errorf("cached build-id %s", got)
		}
	})
}

func TestBadCacheEntries(t *testing.T) {
	t.Parallel()
	body := testELF(testID, 100)
	for name, old := range map[string][]byte{
		"negative hit": nil, // elfutils' empty file after a 404
		"corrupt":      []byte("\x7fELF garbage"),
		"other file":   testELF(otherID, 100),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t, serveFile(body, time.Now()))
			c := newClient(t, srv.URL)
			entry := filepath.Join(c.CacheDir, testID, "debuginfo")
			if err := os.MkdirAll(filepath.Dir(entry), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(entry, old, 0o644); err != nil {
				t.Fatal(err)
			}
			path, err := c.Debuginfo(t.Context(), testID)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, body) || srv.requests.Load() != 1 {
				t.Errorf("the bad entry was not fetched again (%d requests)", srv.requests.Load())
			}
		})
	}
}

func TestConcurrentFetches(t *testing.T) {
	t.Parallel()
	body := testELF(testID, 3<<20)
	srv := newFakeServer(t, serveFile(body, time.Now()))
	c := newClient(t, srv.URL)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			var path string
			path, errs[i] = c.Debuginfo(t.Context(), testID)
			if errs[i] == nil {
				if id, err := buildIDOf(path); id != testID {
					errs[i] = fmt.Errorf("%s: build-id %s (%v)", path, id, err)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := cacheFiles(t, c.CacheDir); len(got) != 3 {
		t.Errorf("cache holds %q, want the entry, its directory and cache_clean_interval_s", got)
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	if c.Enabled() {
		t.Error("enabled with no URLs")
	}
	_, err := c.Debuginfo(t.Context(), testID)
	if !errors.Is(err, debuginfod.ErrDisabled) {
		t.Fatalf("error %v, want ErrDisabled", err)
	}
	if _, err := os.Stat(c.CacheDir); !os.IsNotExist(err) {
		t.Errorf("the cache was made: %v", err)
	}
}

func TestInvalidBuildID(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, serveFile(testELF(testID, 10), time.Now()))
	c := newClient(t, srv.URL)
	for _, id := range []string{"", "abc", "0123456", "xx23456789abcdef", " 0123456789", testID + testID + testID + testID, "../../../etc/passwd"} {
		_, err := c.Debuginfo(t.Context(), id)
		if !errors.Is(err, debuginfod.ErrInvalidBuildID) || !strings.Contains(err.Error(), "hex") {
			t.Errorf("build-id %q: error %v, want ErrInvalidBuildID", id, err)
		}
	}
	if _, err := c.Fetch(t.Context(), debuginfod.Request{BuildID: testID, Type: "source"}); err == nil {
		t.Error("type \"source\": no error")
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests", n)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	body := testELF(testID, 2<<20)
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", itoa(int64(len(body))))
		for b := body; len(b) > 0; { // 2 MiB in about 1.3 s
			n := min(len(b), 128<<10)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
			time.Sleep(80 * time.Millisecond)
		}
	})
	var out bytes.Buffer
	c := newClient(t, srv.URL)
	c.Progress = &out
	if _, err := c.Fetch(t.Context(), debuginfod.Request{BuildID: testID, Name: "/usr/sbin/nginx"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", out.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) < 3 || len(lines) > 6 {
		t.Fatalf("%d progress lines, want a first one, one a second and a final one", len(lines))
	}
	label := "debuginfo of /usr/sbin/nginx (build-id " + testID + ")"
	if want := "debuginfod: fetching " + label + " from " + srv.URL + "/buildid/" + testID + "/debuginfo"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if !strings.Contains(lines[1], label+": ") || !strings.Contains(lines[1], " / 2.0 MiB (") || !strings.Contains(lines[1], "/s") {
		t.Errorf("no bytes / total (percent), rate in %q", lines[1])
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "debuginfod: fetched "+label+": 2.0 MiB in ") || !strings.HasSuffix(last, "/s)") {
		t.Errorf("final line %q", last)
	}

	// A small quick fetch says nothing.
	out.Reset()
	small := newFakeServer(t, serveFile(testELF(otherID, 1000), time.Now()))
	c.URLs = []string{small.URL}
	if _, err := c.Debuginfo(t.Context(), otherID); err != nil || out.Len() != 0 {
		t.Errorf("small fetch: %v, progress %q", err, out.String())
	}
}

// TestStallProgress: a stalled download says so before it times out.
func TestStallProgress(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(testELF(testID, 0)[:64])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	var out bytes.Buffer
	c := newClient(t, srv.URL)
	c.Progress = &out
	c.Timeout = 2500 * time.Millisecond
	_, err := c.Debuginfo(t.Context(), testID)
	if !errors.Is(err, debuginfod.ErrTimeout) {
		t.Fatalf("error %v, want ErrTimeout", err)
	}
	t.Logf("progress:\n%s", out.String())
	for _, want := range []string{
		"debuginfod: fetching debuginfo of build-id " + testID + " from ",
		"64 B / 97.7 KiB (0%), ",
		", no data for ",
		" (gives up at 2.5s)\n",
		"/debuginfo failed after 2.5s (64 B received): timed out: no data for 2.5s\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress does not say %q", want)
		}
	}
	requireNoEntry(t, c.CacheDir)
}
