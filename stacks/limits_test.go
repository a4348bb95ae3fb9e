package stacks_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// wantLimit checks that msg names the bound's field and how to raise it.
func wantLimit(t *testing.T, what, msg, field string) {
	t.Helper()
	if !strings.Contains(msg, field) || !strings.Contains(msg, "raise it") {
		t.Errorf("%s: %q does not name %s and how to raise it", what, msg, field)
	}
}

// TestUnwindLimits unwinds a real capture with each bound set below what
// it needs: the stack stops there, and says which bound and how to raise
// it.
func TestUnwindLimits(t *testing.T) {
	bin := fixture(t, "deep")
	atTarget(t, bin, 8192, func(tr tracee) {
		for _, c := range []struct {
			field string
			set   func(*stacks.Unwinder)
			check func(stacks.Stack) string
		}{
			{"stacks.Unwinder.MaxFrames", func(u *stacks.Unwinder) { u.MaxFrames = 3 }, func(st stacks.Stack) string {
				if !st.Truncated || len(st.Frames) > 3*2 {
					return fmt.Sprintf("%d frames, truncated %v", len(st.Frames), st.Truncated)
				}
				return st.Reason
			}},
			{"stacks.Unwinder.MaxStackBytes", func(u *stacks.Unwinder) { u.MaxStackBytes = 64 }, func(st stacks.Stack) string { return st.Reason }},
			{"symbols.OpenOptions.MaxLineRows", func(u *stacks.Unwinder) { u.Debug = &symbols.OpenOptions{MaxLineRows: 2} }, func(st stacks.Stack) string {
				return strings.Join(st.Notes, "; ")
			}},
		} {
			u := stacks.NewUnwinder("")
			c.set(u)
			st := u.Unwind(tr.capture)
			u.Close()
			wantLimit(t, c.field, c.check(st), c.field)
		}
	}, "2", "20")
}

// TestProcessLimits: a process with more mappings, or more files mapped
// as code, than the bounds gets an error that names the bound.
func TestProcessLimits(t *testing.T) {
	root := t.TempDir()
	const pid = 77
	var maps strings.Builder
	for i := range 10 {
		fmt.Fprintf(&maps, "7f00000%02x000-7f00000%02x000 r-xp 00000000 fd:01 %d /lib/lib%d.so\n", i, i+1, i, i)
	}
	os.MkdirAll(filepath.Join(root, fmt.Sprint(pid)), 0o755)
	if err := os.WriteFile(filepath.Join(root, fmt.Sprint(pid), "maps"), []byte(maps.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		field string
		set   func(*stacks.Unwinder)
	}{
		{"stacks.Unwinder.MaxMappings", func(u *stacks.Unwinder) { u.MaxMappings = 5 }},
		{"stacks.Unwinder.MaxModules", func(u *stacks.Unwinder) { u.MaxModules = 5 }},
	} {
		u := stacks.NewUnwinder(root)
		c.set(u)
		err := u.Prepare(pid)
		if !errors.Is(err, symbols.ErrLimit) {
			t.Fatalf("%s: Prepare: %v, want a bound's error", c.field, err)
		}
		wantLimit(t, c.field, err.Error(), c.field)
		st := u.Unwind(stacks.Capture{PID: pid, Regs: map[uint64]uint64{stacks.RegRA: 0x7f0000000100}})
		wantLimit(t, c.field+" (Unwind)", st.Reason, c.field)
		u.Close()
	}
}

// TestParseMapsBounded: 100,000 mappings (over the kernel's default
// vm.max_map_count) are refused, quickly, after the first 65,536; a line
// longer than a maps line can be is an error that says so.
func TestParseMapsBounded(t *testing.T) {
	line := "7f0000000000-7f0000001000 r--p 00000000 fd:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
	start := time.Now()
	_, err := stacks.ParseMaps(strings.NewReader(strings.Repeat(line, 100_000)))
	if !errors.Is(err, symbols.ErrLimit) {
		t.Fatalf("100,000 mappings: %v", err)
	}
	wantLimit(t, "mappings", err.Error(), "MaxMappings")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if ms, err := stacks.ParseMaps(strings.NewReader(strings.Repeat(line, stacks.DefaultMaxMappings))); err != nil || len(ms) != stacks.DefaultMaxMappings {
		t.Errorf("%d mappings: %d, %v", stacks.DefaultMaxMappings, len(ms), err)
	}
	_, err = stacks.ParseMaps(strings.NewReader("7f0000000000-7f0000001000 r--p 00000000 fd:01 7 /" + strings.Repeat("x", 100<<10) + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1 is longer than") {
		t.Errorf("a 100 KiB line: %v", err)
	}
}
