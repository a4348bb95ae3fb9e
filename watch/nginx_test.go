package watch_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/testenv"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
)

var variants = []string{nginxtest.VariantO2, nginxtest.VariantLTO}

type opened struct {
	once sync.Once
	inst nginxtest.Install
	bin  *symbols.Binary
	err  error
}

var (
	openMu sync.Mutex
	opens  = map[string]*opened{}
)

// openNginx builds (or finds cached) nginx of the variant and opens it
// once per test run.
func openNginx(t *testing.T, variant string) (nginxtest.Install, *symbols.Binary) {
	t.Helper()
	inst := nginxtest.Build(t, variant)
	openMu.Lock()
	o, ok := opens[variant]
	if !ok {
		o = &opened{}
		opens[variant] = o
	}
	openMu.Unlock()
	o.once.Do(func() {
		o.inst = inst
		o.bin, o.err = symbols.Open(inst.Binary, nil)
	})
	if o.err != nil {
		t.Fatalf("open %s: %v", inst.Binary, o.err)
	}
	return o.inst, o.bin
}

// sourceLines returns the numbers of the lines of file, inside the body
// of C function fn (nginx style: the name starts a line), that contain
// text.
func sourceLines(t *testing.T, file, fn, text string) []int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, fn+"("):
			in = true
		case in && line == "}":
			in = false
		case in && strings.Contains(line, text):
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no %q in %s()", file, text, fn)
	}
	return out
}

// inFunction reports whether the site's code belongs to fn: its symbol
// (clones and LTO copies included) or an inlined frame.
func inFunction(s watch.Site, fn string) bool {
	if symbols.BaseName(s.Function) == fn {
		return true
	}
	for _, f := range s.Frames {
		if f.Function == fn {
			return true
		}
	}
	return false
}

// findSite returns the first site in fn, on one of lines of file, and
// describes the candidates in fn when there is none.
func findSite(sites []watch.Site, fn, file string, lines []int) (watch.Site, string) {
	var near []string
	for _, s := range sites {
		if !inFunction(s, fn) {
			continue
		}
		near = append(near, s.String())
		if !strings.HasSuffix(s.File, file) {
			continue
		}
		for _, l := range lines {
			if s.Line == l || slices.Contains(s.Lines, l) {
				return s, ""
			}
		}
	}
	return watch.Site{}, strings.Join(near, "\n\t")
}

// paholeBits reads "name:bits; /* byte: bit size */" lines of pahole -C.
func paholeBits(t *testing.T, binary, tag string) map[string][2]int {
	t.Helper()
	if _, err := exec.LookPath("pahole"); err != nil {
		testenv.SkipOrFail(t, "pahole is not installed: %v", err)
	}
	out, err := exec.Command("pahole", "-C", tag, binary).Output()
	if err != nil {
		t.Fatalf("pahole -C %s: %v", tag, err)
	}
	re := regexp.MustCompile(`\s(\w+):\d+;\s+/\*\s+(\d+):\s*(\d+)\s+\d+\s+\*/`)
	got := map[string][2]int{}
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		unit, _ := strconv.Atoi(m[2])
		bit, _ := strconv.Atoi(m[3])
		got[m[1]] = [2]int{unit + bit/8, bit % 8} // byte, bit in byte (little-endian)
	}
	return got
}

func TestNginxResolveField(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			inst, bin := openNginx(t, v)
			truth := paholeBits(t, inst.Binary, "ngx_event_s")
			for _, name := range []string{"eof", "error", "timedout", "timer_set", "posted"} {
				f, err := watch.ResolveField(bin, "ngx_event_t", name)
				if err != nil {
					t.Fatal(err)
				}
				want, ok := truth[name]
				if !ok {
					t.Fatalf("pahole does not list %s", name)
				}
				if f.Offset != int64(want[0]) || f.BitOffset != want[1] || f.BitSize != 1 || !f.Bitfield {
					t.Errorf("%v, pahole says byte %d bit %d", f, want[0], want[1])
				}
				if f.StructTag != "ngx_event_s" || f.StructSize <= 0 {
					t.Errorf("%s: struct %q size %d", name, f.StructTag, f.StructSize)
				}
			}
			eof, _ := watch.ResolveField(bin, "ngx_event_t", "eof")
			t.Logf("%v, bases %+v", eof, eof.Bases)
			var timer bool
			for _, b := range eof.Bases {
				timer = timer || b.Via == "ngx_event_t.timer" && b.At > 0
			}
			if !timer {
				t.Errorf("no base for ngx_event_t.timer in %+v", eof.Bases)
			}

			// Through a pointer: the watched object is the event.
			f, err := watch.ResolveField(bin, "ngx_connection_t", "read->eof")
			if err != nil || f.Type != "ngx_event_t" || f.Member != "eof" || f.Offset != eof.Offset || f.BitOffset != eof.BitOffset {
				t.Errorf("ngx_connection_t read->eof: %v, %v", f, err)
			}
			f, err = watch.ResolveField(bin, "ngx_event_t", "timer.key")
			if err != nil || f.Bitfield || f.BitSize != 64 || f.Offset < 8 {
				t.Errorf("timer.key: %v, %v", f, err)
			}

			var nf *symbols.NotFoundError
			_, err = watch.ResolveField(bin, "ngx_event_t", "eoff")
			if !errors.Is(err, symbols.ErrFieldNotFound) || !errors.As(err, &nf) || !slices.Contains(nf.Closest, "eof") {
				t.Errorf("eoff: %v, want field not found, did you mean eof", err)
			}
			t.Logf("eoff: %v", err)
			_, err = watch.ResolveField(bin, "ngx_event_t", "timer")
			if !errors.Is(err, watch.ErrTooWide) {
				t.Errorf("timer: %v, want ErrTooWide", err)
			}
			t.Logf("timer: %v", err)
			for _, p := range []string{"eof.x", "data->x", "eof->x", "log.x", ""} {
				if _, err := watch.ResolveField(bin, "ngx_event_t", p); !errors.Is(err, watch.ErrNotField) {
					t.Errorf("%q: %v, want ErrNotField", p, err)
				} else {
					t.Logf("%q: %v", p, err)
				}
			}
			if _, err := watch.ResolveField(bin, "ngx_evnt_t", "eof"); !errors.Is(err, symbols.ErrTypeNotFound) {
				t.Errorf("ngx_evnt_t: %v, want type not found", err)
			}
		})
	}
}

// The scan finds the assignments of the source, each at its line.
func TestNginxFindWrites(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			inst, bin := openNginx(t, v)
			src := func(p string) string { return filepath.Join(inst.SourceDir, p) }
			cases := []struct {
				field, fn, file, text string
			}{
				{"eof", "ngx_unix_recv", "src/os/unix/ngx_recv.c", "rev->eof = 1;"},
				{"eof", "ngx_http_upstream_check_broken_connection", "src/http/ngx_http_upstream.c", "ev->eof = 1;"},
				{"timedout", "ngx_event_expire_timers", "src/event/ngx_event_timer.c", "ev->timedout = 1;"},
			}
			results := map[string]*watch.Result{}
			for _, c := range cases {
				res := results[c.field]
				if res == nil {
					f, err := watch.ResolveField(bin, "ngx_event_t", c.field)
					if err != nil {
						t.Fatal(err)
					}
					start := time.Now()
					res, err = watch.Scan(bin, f, nil)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("%s: %d sites in %v", f, len(res.Sites), time.Since(start).Round(time.Millisecond))
					results[c.field] = res
				}
				lines := sourceLines(t, src(c.file), c.fn, c.text)
				s, near := findSite(res.Sites, c.fn, c.file, lines)
				if s.Address == 0 {
					t.Errorf("%s: no site in %s at %s:%v; sites in %s:\n\t%s", c.field, c.fn, c.file, lines, c.fn, near)
					continue
				}
				t.Logf("%s = 1 at %s:%v: %v", c.field, c.file, lines, s)
				if v, ok := s.Const(); !ok || v != 1 {
					t.Errorf("%v: the field becomes %d (static %v), want 1", s, v, ok)
				}
				if s.Hint == watch.HintMismatch {
					t.Errorf("%v: hint mismatch", s)
				}
				checkObjdump(t, inst.Binary, s)
				checkFileBytes(t, inst.Binary, s)
			}
		})
	}
}

// checkObjdump compares a site with objdump's disassembly of its address.
func checkObjdump(t *testing.T, binary string, s watch.Site) {
	t.Helper()
	if _, err := exec.LookPath("objdump"); err != nil {
		testenv.SkipOrFail(t, "objdump is not installed: %v", err)
	}
	out, err := exec.Command("objdump", "-d",
		fmt.Sprintf("--start-address=%#x", s.Address), fmt.Sprintf("--stop-address=%#x", s.Address+uint64(s.Len)), binary).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	prefix := fmt.Sprintf("%x:", s.Address)
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		// "4a76c:\t66 41 89 46 08       \tmov    %ax,0x8(%r14)"
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("objdump line %q", line)
		}
		bytes := strings.Fields(parts[1])
		var want []string
		for _, b := range s.Bytes {
			want = append(want, fmt.Sprintf("%02x", b))
		}
		if strings.Join(bytes, " ") != strings.Join(want, " ") {
			t.Errorf("%#x: objdump bytes %v, site %v", s.Address, bytes, want)
		}
		norm := func(x string) string {
			if i := strings.Index(x, "#"); i >= 0 {
				x = x[:i]
			}
			return strings.Join(strings.Fields(x), " ")
		}
		if norm(parts[2]) != norm(s.Text) {
			t.Errorf("%#x: objdump says %q, site %q", s.Address, norm(parts[2]), s.Text)
		} else {
			t.Logf("objdump agrees: %s:\t%s", prefix, parts[2])
		}
		return
	}
	t.Errorf("objdump has no instruction at %#x:\n%s", s.Address, out)
}

// checkFileBytes reads the instruction at its file offset, where a uprobe
// attaches.
func checkFileBytes(t *testing.T, binary string, s watch.Site) {
	t.Helper()
	f, err := os.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, s.Len)
	if _, err := f.ReadAt(b, int64(s.FileOffset)); err != nil {
		t.Fatal(err)
	}
	if string(b) != string(s.Bytes) {
		t.Errorf("%#x: file offset %#x holds % x, site % x", s.Address, s.FileOffset, b, s.Bytes)
	}
}

// Globals of the watched type are written rip-relative; the scan finds
// them through their symbols and DWARF.
func TestNginxGlobals(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			inst, bin := openNginx(t, v)
			f, err := watch.ResolveField(bin, "ngx_event_t", "timer_set")
			if err != nil {
				t.Fatal(err)
			}
			res, err := watch.Scan(bin, f, nil)
			if err != nil {
				t.Fatal(err)
			}
			lines := sourceLines(t, filepath.Join(inst.SourceDir, "src/core/ngx_cycle.c"), "ngx_init_cycle", "ngx_cleaner_event.timer_set = 1;")
			found := false
			for _, s := range res.Sites {
				if s.Global == "ngx_cleaner_event" && s.Base == watch.NoReg {
					t.Logf("%v (lines %v)", s, lines)
					found = true
				}
			}
			if !found {
				t.Errorf("no rip-relative write of ngx_cleaner_event.timer_set")
			}
		})
	}
}

// TestNginxReport logs what the scan finds for eof, error and timedout on
// both builds: counts by kind and by type hint, and how long it takes.
func TestNginxReport(t *testing.T) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			_, bin := openNginx(t, v)
			for _, name := range []string{"eof", "error", "timedout"} {
				start := time.Now()
				f, err := watch.ResolveField(bin, "ngx_event_t", name)
				if err != nil {
					t.Fatal(err)
				}
				resolved := time.Since(start)
				start = time.Now()
				res, err := watch.Scan(bin, f, nil)
				if err != nil {
					t.Fatal(err)
				}
				elapsed := time.Since(start)
				dropped, err := watch.Scan(bin, f, &watch.Options{DropMismatch: true})
				if err != nil {
					t.Fatal(err)
				}
				st := res.Stats
				var kinds, hints []string
				for _, k := range watch.Kinds() {
					if n := st.Kinds[k]; n > 0 {
						kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
					}
				}
				for h := watch.HintNone; h <= watch.HintMismatch; h++ {
					hints = append(hints, fmt.Sprintf("%s %d", h, st.Hints[h]))
				}
				static := 0
				for _, s := range res.Sites {
					if _, ok := s.Const(); ok {
						static++
					}
				}
				t.Logf("%s %s: %d sites (%d instructions; %d with a static value): %s; hints: %s; no-effect dropped %d; skipped stack %d, rip %d; string ops %d; decode errors %d",
					v, name, len(res.Sites), st.Addresses, static, strings.Join(kinds, ", "), strings.Join(hints, ", "), st.NoEffect, st.Stack, st.RIP, st.StringOps, st.DecodeErrors)
				t.Logf("%s %s: resolve %v, scan %v (setup %v, decode %d instructions %v, lines+hints %v); without mismatches: %d sites",
					v, name, resolved.Round(time.Millisecond), elapsed.Round(time.Millisecond), st.Setup.Round(time.Millisecond), st.Instructions, st.Decode.Round(time.Millisecond), st.Lines.Round(time.Millisecond), len(dropped.Sites))
				if elapsed > 10*time.Second {
					t.Errorf("scan took %v", elapsed)
				}
				if name == "eof" && testing.Verbose() {
					var unknown []string
					for _, s := range res.Sites {
						if s.Kind == watch.Unknown && s.Hint != watch.HintMismatch {
							unknown = append(unknown, s.String())
						}
					}
					sort.Strings(unknown)
					if len(unknown) > 12 {
						unknown = unknown[:12]
					}
					t.Logf("%s eof: unknown sites not ruled out by type, first %d:\n\t%s", v, len(unknown), strings.Join(unknown, "\n\t"))
				}
			}
		})
	}
}
