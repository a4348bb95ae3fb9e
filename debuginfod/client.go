package debuginfod

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout is elfutils' default DEBUGINFOD_TIMEOUT.
const DefaultTimeout = 90 * time.Second

// DefaultMaxSize is the default of Client.MaxSize: 256 MiB, the bound on
// the DWARF that package symbols reads of a file
// (symbols.DefaultMaxDebugInfo); no larger file could be used. Real ones
// are far smaller: Debian's nginx debug file is 1.2 MiB, libc's 4 MiB,
// libcrypto's over 10 MiB. (elfutils has no default bound.)
const DefaultMaxSize int64 = 256 << 20

// Build-ids are 4 to 64 bytes: elfutils takes at most 64
// (MAX_BUILD_ID_BYTES); gcc and lld write 8 (fast), 16 (md5, uuid) or 20
// (sha1).
const (
	minBuildIDBytes = 4
	maxBuildIDBytes = 64
)

var (
	// ErrDisabled: the client has no server URLs (DEBUGINFOD_URLS is
	// empty or unset). As in elfutils, the cache is not looked at either.
	ErrDisabled = errors.New("debuginfod is disabled: no server URLs (DEBUGINFOD_URLS is empty)")
	// ErrInvalidBuildID: the build-id is not 4 to 64 bytes of hex.
	ErrInvalidBuildID = errors.New("invalid build-id")
	// ErrNotFound: every server answered 404.
	ErrNotFound = errors.New("not found")
	// ErrBuildIDMismatch: the server sent something that is not an ELF file
	// whose GNU build-id note is the requested one (another build-id, none,
	// not ELF at all, or an ELF file cut short).
	ErrBuildIDMismatch = errors.New("not the file with the requested build-id")
	// ErrTimeout: no byte came from the server for Timeout, before the
	// response or in the middle of the body.
	ErrTimeout = errors.New("timed out")
	// ErrTooLarge: the file is larger than MaxSize (by Content-Length, by
	// the bytes received, or by the server's 406 answer to
	// X-DEBUGINFOD-MAXSIZE).
	ErrTooLarge = errors.New("file too large")
)

// FileType is what is fetched for a build-id: the last element of the
// server's URL and the cached file's name.
type FileType string

// The file types debuginfod serves by build-id (sources and sections are
// not supported).
const (
	// TypeDebuginfo is the file with the DWARF: a separate debug file, or
	// an unstripped binary.
	TypeDebuginfo FileType = "debuginfo"
	// TypeExecutable is the binary itself (possibly stripped).
	TypeExecutable FileType = "executable"
)

// Client fetches files from debuginfod servers into a cache. Its fields
// are read, never written, by its methods: a Client may be used by several
// goroutines at once, and the zero value, with URLs set, works.
type Client struct {
	// URLs are the servers' base URLs ("https://debuginfod.example.org"),
	// asked in order, each once; "/buildid/<id>/<type>" is appended. An
	// entry may hold several URLs separated by white space, as
	// DEBUGINFOD_URLS does. Empty means disabled: every fetch fails with
	// ErrDisabled.
	URLs []string
	// CacheDir is the cache directory; DefaultCacheDir() when empty.
	CacheDir string
	// Timeout is the longest the client waits for the next byte from a
	// server (for the response, then for each part of the body) before it
	// fails with ErrTimeout. Zero means DefaultTimeout, negative no limit.
	Timeout time.Duration
	// MaxSize is the largest file fetched: larger ones fail with
	// ErrTooLarge, and nothing of them is kept. Zero means
	// DefaultMaxSize, negative no limit.
	MaxSize int64
	// Progress, when not nil, gets progress lines for a download larger
	// than 1 MiB or slower than a second, and a final line.
	Progress io.Writer
	// HTTP is the HTTP client; http.DefaultClient when nil. Its own
	// Timeout, if any, bounds whole downloads: leave it zero.
	HTTP *http.Client
}

// Request says what to fetch.
type Request struct {
	// BuildID is the hex build-id (upper case is taken as lower case).
	BuildID string
	// Type is TypeDebuginfo when empty.
	Type FileType
	// Name, when set, says in progress lines what the file is for (the
	// binary's path, say).
	Name string
}

// FromEnv returns a client configured as elfutils configures its own:
//
//	DEBUGINFOD_URLS        servers, separated by white space; empty or
//	                       unset disables the client (see Enabled)
//	DEBUGINFOD_CACHE_PATH  the cache directory (see DefaultCacheDir)
//	DEBUGINFOD_TIMEOUT     seconds without data before giving up (default
//	                       90; 0 or less: no limit)
//	DEBUGINFOD_MAXSIZE     largest file in bytes (default DefaultMaxSize;
//	                       0 or less: no limit, as in elfutils)
//
// A number that does not parse is an error (elfutils takes it as 0).
func FromEnv() (*Client, error) {
	c := &Client{
		URLs:     strings.Fields(os.Getenv("DEBUGINFOD_URLS")),
		CacheDir: DefaultCacheDir(),
		Timeout:  DefaultTimeout,
	}
	if v, ok := os.LookupEnv("DEBUGINFOD_TIMEOUT"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("debuginfod: DEBUGINFOD_TIMEOUT=%q: want a whole number of seconds", v)
		}
		c.Timeout = time.Duration(n) * time.Second
		if n <= 0 {
			c.Timeout = -1
		}
	}
	if v, ok := os.LookupEnv("DEBUGINFOD_MAXSIZE"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("debuginfod: DEBUGINFOD_MAXSIZE=%q: want a number of bytes", v)
		}
		c.MaxSize = n
		if n <= 0 {
			c.MaxSize = -1
		}
	}
	return c, nil
}

// DefaultCacheDir is the cache directory elfutils uses:
// $DEBUGINFOD_CACHE_PATH when set, else $HOME/.debuginfod_client_cache
// when it exists, else $XDG_CACHE_HOME/debuginfod_client when
// $XDG_CACHE_HOME is set, else $HOME/.cache/debuginfod_client ($HOME
// unset is "/").
func DefaultCacheDir() string {
	if p := os.Getenv("DEBUGINFOD_CACHE_PATH"); p != "" {
		return p
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = "/"
	}
	if old := filepath.Join(home, ".debuginfod_client_cache"); exists(old) {
		return old
	}
	if xdg := os.Getenv("XDG_CACHE_HOME"); xdg != "" {
		return filepath.Join(xdg, "debuginfod_client")
	}
	return filepath.Join(home, ".cache", "debuginfod_client")
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Enabled reports whether the client has a server to ask.
func (c *Client) Enabled() bool { return len(c.servers()) > 0 }

// Debuginfo returns the path of the cached debug file (DWARF) for the
// build-id, fetching it first if it is not cached.
func (c *Client) Debuginfo(ctx context.Context, buildID string) (string, error) {
	return c.Fetch(ctx, Request{BuildID: buildID, Type: TypeDebuginfo})
}

// Executable returns the path of the cached executable for the build-id,
// fetching it first if it is not cached.
func (c *Client) Executable(ctx context.Context, buildID string) (string, error) {
	return c.Fetch(ctx, Request{BuildID: buildID, Type: TypeExecutable})
}

// Fetch returns the path of the cached file for the request, fetching it
// first if it is not cached: from each server in turn, until one sends the
// ELF file with that build-id. The file is under CacheDir, read-only, and
// stays there.
//
// Errors wrap ErrDisabled, ErrInvalidBuildID, ErrNotFound (every server
// answered 404), ErrBuildIDMismatch, ErrTimeout, ErrTooLarge, the
// context's error, or the network's (a refused connection wraps
// syscall.ECONNREFUSED); with several servers, the error wraps each
// server's but ErrNotFound, which is only there when all of them said 404.
func (c *Client) Fetch(ctx context.Context, req Request) (string, error) {
	id, err := normalizeBuildID(req.BuildID)
	if err != nil {
		return "", err
	}
	typ := req.Type
	if typ == "" {
		typ = TypeDebuginfo
	}
	if typ != TypeDebuginfo && typ != TypeExecutable {
		return "", fmt.Errorf("debuginfod: unknown file type %q (want %q or %q)", typ, TypeDebuginfo, TypeExecutable)
	}
	servers := c.servers()
	if len(servers) == 0 {
		return "", fmt.Errorf("debuginfod: %s %s: %w", typ, id, ErrDisabled)
	}
	cache := c.CacheDir
	if cache == "" {
		cache = DefaultCacheDir()
	}
	if err := prepareCache(cache); err != nil {
		return "", fmt.Errorf("debuginfod: cache %s: %w", cache, err)
	}
	target := filepath.Join(cache, id, string(typ))
	if cached(target, id) {
		return target, nil
	}
	d := download{c: c, id: id, typ: typ, name: req.Name, target: target}
	var failed []serverError
	for _, s := range servers {
		err := d.from(ctx, s)
		if err == nil {
			return target, nil
		}
		failed = append(failed, serverError{s, err})
		if ctx.Err() != nil || errors.Is(err, ErrTooLarge) {
			break // the same build-id is the same size everywhere
		}
	}
	return "", &fetchError{id: id, typ: typ, servers: failed}
}

// normalizeBuildID checks that id is a build-id in hex, 4 to 64 bytes,
// and returns it in lower case, as servers and the cache want it.
func normalizeBuildID(id string) (string, error) {
	if len(id)%2 != 0 || len(id) < 2*minBuildIDBytes || len(id) > 2*maxBuildIDBytes {
		return "", fmt.Errorf("debuginfod: %w %q: want %d to %d hex digits, an even number", ErrInvalidBuildID, id, 2*minBuildIDBytes, 2*maxBuildIDBytes)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", fmt.Errorf("debuginfod: %w %q: not hex", ErrInvalidBuildID, id)
	}
	return strings.ToLower(id), nil
}

// servers are the URLs up to "/buildid", without repeats, as elfutils
// builds them (a base URL ending in "/" gets "buildid").
func (c *Client) servers() []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range c.URLs {
		for _, f := range strings.Fields(u) {
			if strings.HasSuffix(f, "/") {
				f += "buildid"
			} else {
				f += "/buildid"
			}
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}

func (c *Client) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// maxSize is the bound on a file, 0 for none.
func (c *Client) maxSize() int64 {
	switch {
	case c.MaxSize == 0:
		return DefaultMaxSize
	case c.MaxSize < 0:
		return 0
	}
	return c.MaxSize
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

const userAgent = "ngxprobe-debuginfod/1 (Go; " + runtime.GOOS + "/" + runtime.GOARCH + ")"

// serverError is one server's failure.
type serverError struct {
	url string // up to /buildid
	err error
}

// fetchError is a fetch that no server could serve.
type fetchError struct {
	id      string
	typ     FileType
	servers []serverError
}

func (e *fetchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "debuginfod: %s %s: ", e.typ, e.id)
	if e.allNotFound() {
		fmt.Fprintf(&b, "%v on ", ErrNotFound)
		for i, s := range e.servers {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strings.TrimSuffix(s.url, "/buildid"))
		}
		return b.String()
	}
	for i, s := range e.servers {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s/%s/%s: %v", s.url, e.id, e.typ, s.err)
	}
	return b.String()
}

// Unwrap is every server's error but a 404's: errors.Is(err, ErrNotFound)
// only when every server answered 404.
func (e *fetchError) Unwrap() []error {
	if e.allNotFound() {
		return []error{ErrNotFound}
	}
	var errs []error
	for _, s := range e.servers {
		if !errors.Is(s.err, ErrNotFound) {
			errs = append(errs, s.err)
		}
	}
	return errs
}

func (e *fetchError) allNotFound() bool {
	for _, s := range e.servers {
		if !errors.Is(s.err, ErrNotFound) {
			return false
		}
	}
	return len(e.servers) > 0
}

// netError explains a transport error.
func netError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("connection refused: is the server running? (%w)", err)
	}
	return err
}
