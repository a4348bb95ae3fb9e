package debuginfod_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ngxprobe/ngxprobe/debuginfod"
)

func Example() {
	// A stand-in for a debuginfod server, which serves one ELF file
	// (testELF) under /buildid/<build-id>/debuginfo.
	const id = "0123456789abcdef0123456789abcdef01234567"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/buildid/"+id+"/debuginfo" {
			http.NotFound(w, r)
			return
		}
		w.Write(testELF(id, 1000))
	}))
	defer srv.Close()
	cache, _ := os.MkdirTemp("", "debuginfod-example")
	defer os.RemoveAll(cache)

	// In a program: c, err := debuginfod.FromEnv().
	c := &debuginfod.Client{
		URLs:     []string{srv.URL},
		CacheDir: cache,
		Timeout:  10 * time.Second,
		Progress: os.Stderr, // for downloads over 1 MiB or 1 s
	}
	ctx := context.Background()
	path, err := c.Fetch(ctx, debuginfod.Request{BuildID: id, Name: "/usr/sbin/nginx"})
	if err != nil {
		fmt.Println(err)
		return
	}
	rel, _ := filepath.Rel(cache, path)
	fmt.Println("cached as", rel)

	// Now a cache hit, without a request.
	srv.Close()
	if again, err := c.Debuginfo(ctx, id); err == nil && again == path {
		fmt.Println("cache hit")
	}

	// Another build-id, not cached: the server is down.
	_, err = c.Debuginfo(ctx, "00112233445566778899aabbccddeeff00112233")
	fmt.Println("not found:", errors.Is(err, debuginfod.ErrNotFound), "refused:", errors.Is(err, syscall.ECONNREFUSED))
	// Output:
	// cached as 0123456789abcdef0123456789abcdef01234567/debuginfo
	// cache hit
	// not found: false refused: true
}
