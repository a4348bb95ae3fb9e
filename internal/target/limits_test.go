package target

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestModulesOfLimits: a process with more mappings, or more files mapped
// as code, than the bounds gets an error that names the bound and how to
// raise it.
func TestModulesOfLimits(t *testing.T) {
	root := fakeProc(t, map[int][2]string{10: {"nginx: master process", "1"}})
	maps := `7f0000000000-7f0000010000 r-xp 00002000 08:01 200 /usr/lib/nginx/modules/ngx_stream_module.so
7f0000010000-7f0000020000 r-xp 00002000 08:01 201 /usr/lib/nginx/modules/ngx_mail_module.so
7f0000020000-7f0000030000 r-xp 00002000 08:01 202 /usr/lib/x86_64-linux-gnu/libc.so.6
`
	if err := os.WriteFile(filepath.Join(root, "10", "maps"), []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(mods, maps int) { MaxModules, MaxMappings = mods, maps }(MaxModules, MaxMappings)
	for _, c := range []struct {
		field      string
		mods, maps int
	}{
		{"target.MaxModules", 2, 0},
		{"target.MaxMappings", 0, 2},
	} {
		MaxModules, MaxMappings = c.mods, c.maps
		_, err := ModulesOf(root, 10)
		if !errors.Is(err, symbols.ErrLimit) || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), "raise it") {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	MaxModules, MaxMappings = 0, 0
	if mods, err := ModulesOf(root, 10); err != nil || len(mods) != 3 {
		t.Errorf("within the defaults: %v, %v", mods, err)
	}
}
