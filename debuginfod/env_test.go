package debuginfod_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/debuginfod"
)

// setEnv sets the DEBUGINFOD_ variables and the cache's other inputs for
// the test; "" unsets.
func setEnv(t *testing.T, kv map[string]string) {
	for _, k := range []string{"DEBUGINFOD_URLS", "DEBUGINFOD_CACHE_PATH", "DEBUGINFOD_TIMEOUT", "DEBUGINFOD_MAXSIZE", "XDG_CACHE_HOME", "HOME"} {
		t.Setenv(k, "") // restored at the end
		if v := kv[k]; v != "" {
			os.Setenv(k, v)
		} else {
			os.Unsetenv(k)
		}
	}
}

func TestFromEnv(t *testing.T) {
	home := t.TempDir()
	setEnv(t, map[string]string{
		"DEBUGINFOD_URLS":    " https://a.example/  http://b.example:8002\thttps://a.example/ ",
		"DEBUGINFOD_TIMEOUT": "30",
		"DEBUGINFOD_MAXSIZE": "1000000",
		"HOME":               home,
	})
	c, err := debuginfod.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://a.example/", "http://b.example:8002", "https://a.example/"}; !slices.Equal(c.URLs, want) {
		t.Errorf("URLs %q, want %q", c.URLs, want)
	}
	if !c.Enabled() || c.Timeout != 30*time.Second || c.MaxSize != 1000000 {
		t.Errorf("enabled %v, timeout %v, max size %d", c.Enabled(), c.Timeout, c.MaxSize)
	}
	if want := filepath.Join(home, ".cache", "debuginfod_client"); c.CacheDir != want {
		t.Errorf("cache %s, want %s", c.CacheDir, want)
	}
}

func TestFromEnvDefaults(t *testing.T) {
	for _, urls := range []string{"", "   "} {
		setEnv(t, map[string]string{"DEBUGINFOD_URLS": urls, "HOME": t.TempDir()})
		c, err := debuginfod.FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if c.Enabled() || c.Timeout != debuginfod.DefaultTimeout || c.MaxSize != 0 {
			t.Errorf("DEBUGINFOD_URLS=%q: enabled %v, timeout %v, max size %d", urls, c.Enabled(), c.Timeout, c.MaxSize)
		}
	}
	// DEBUGINFOD_TIMEOUT=0 is no limit, as in elfutils.
	setEnv(t, map[string]string{"DEBUGINFOD_TIMEOUT": "0", "DEBUGINFOD_MAXSIZE": "0"})
	if c, err := debuginfod.FromEnv(); err != nil || c.Timeout >= 0 || c.MaxSize >= 0 {
		t.Errorf("DEBUGINFOD_TIMEOUT=0: %+v, %v", c, err)
	}
	for _, kv := range [][2]string{{"DEBUGINFOD_TIMEOUT", "soon"}, {"DEBUGINFOD_TIMEOUT", "1.5"}, {"DEBUGINFOD_MAXSIZE", "1G"}} {
		setEnv(t, map[string]string{kv[0]: kv[1]})
		if _, err := debuginfod.FromEnv(); err == nil {
			t.Errorf("%s=%s: no error", kv[0], kv[1])
		} else {
			t.Log(err)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		env  map[string]string
		old  bool // $HOME/.debuginfod_client_cache exists
		want string
	}{
		{map[string]string{"HOME": home}, false, filepath.Join(home, ".cache/debuginfod_client")},
		{map[string]string{"HOME": home, "XDG_CACHE_HOME": "/xdg"}, false, "/xdg/debuginfod_client"},
		{map[string]string{"HOME": home, "XDG_CACHE_HOME": "/xdg", "DEBUGINFOD_CACHE_PATH": "/dc"}, true, "/dc"},
		{map[string]string{"HOME": home, "XDG_CACHE_HOME": "/xdg"}, true, filepath.Join(home, ".debuginfod_client_cache")},
		{map[string]string{}, false, "/.cache/debuginfod_client"},
	}
	for _, tt := range tests {
		setEnv(t, tt.env)
		old := filepath.Join(home, ".debuginfod_client_cache")
		if tt.old {
			os.Mkdir(old, 0o700)
		} else {
			os.Remove(old)
		}
		if got := debuginfod.DefaultCacheDir(); got != tt.want {
			t.Errorf("%v (old cache %v): %s, want %s", tt.env, tt.old, got, tt.want)
		}
	}
}

// TestCacheDirCreated: the cache and $XDG_CACHE_HOME are made as elfutils
// makes them.
func TestCacheDirCreated(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, serveFile(testELF(testID, 10), time.Now()))
	xdg := filepath.Join(t.TempDir(), "xdg")
	c := newClient(t, srv.URL)
	c.CacheDir = filepath.Join(xdg, "debuginfod_client")
	if _, err := c.Debuginfo(t.Context(), testID); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]os.FileMode{xdg: 0o700, c.CacheDir: 0o777 &^ umask(t)} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %v", dir, fi.Mode(), want)
		}
	}
}

// umask reads the process's umask without changing it.
func umask(t testing.TB) os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
			return os.FileMode(n)
		}
	}
	t.Fatal("no Umask in /proc/self/status")
	return 0
}

// TestDefaultCacheDirElfutils: debuginfod-find (with its server down)
// makes its cache where DefaultCacheDir says.
func TestDefaultCacheDirElfutils(t *testing.T) {
	requireTool(t, "debuginfod-find")
	down := closedPort(t)
	for _, tt := range []struct {
		name     string
		xdg, old bool
	}{{"HOME", false, false}, {"XDG_CACHE_HOME", true, false}, {"old cache", true, true}} {
		home := t.TempDir()
		env := map[string]string{"HOME": home}
		if tt.xdg {
			env["XDG_CACHE_HOME"] = filepath.Join(home, "xdg")
		}
		if tt.old {
			os.Mkdir(filepath.Join(home, ".debuginfod_client_cache"), 0o755)
		}
		setEnv(t, env)
		want := debuginfod.DefaultCacheDir()
		cmd := exec.Command("debuginfod-find", "debuginfo", testID)
		cmd.Env = cleanEnv("DEBUGINFOD_URLS="+down, "XDG_CACHE_HOME="+env["XDG_CACHE_HOME"])
		cmd.Run() // fails: the server is down
		if _, err := os.Stat(filepath.Join(want, "cache_clean_interval_s")); err != nil {
			t.Errorf("%s: elfutils made no cache at %s: %v", tt.name, want, err)
		}
	}
}
