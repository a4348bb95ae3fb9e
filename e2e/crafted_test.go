package e2e

import (
	"debug/elf"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// craftedMutations is how many seeded mutations of nginx's DWARF the test
// tries.
const craftedMutations = 50

// mutateDWARF returns a copy of binary with bytes of its debug sections
// overwritten, seeded: the code is untouched, so the copy still runs as
// nginx, while its DWARF is whatever a hostile tenant could ship.
func mutateDWARF(t *testing.T, data []byte, seed int64) []byte {
	t.Helper()
	f, err := elf.NewFile(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	var debug []*elf.Section
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") && s.Type != elf.SHT_NOBITS && s.Size > 0 {
			debug = append(debug, s)
		}
	}
	out := append([]byte(nil), data...)
	r := rand.New(rand.NewSource(seed))
	s := debug[r.Intn(len(debug))]
	// A few small runs in one section: header fields, abbrev codes,
	// forms, offsets and lengths all get hit across the seeds.
	for range 1 + r.Intn(8) {
		off := s.Offset + uint64(r.Int63n(int64(s.Size)))
		n := 1 + r.Intn(8)
		for i := 0; i < n && off+uint64(i) < s.Offset+s.Size; i++ {
			switch r.Intn(4) {
			case 0:
				out[off+uint64(i)] = 0xff
			case 1:
				out[off+uint64(i)] = 0
			default:
				out[off+uint64(i)] = byte(r.Intn(256))
			}
		}
	}
	return out
}

// TestCraftedBinary: an nginx whose DWARF is mutated in 50 seeded ways is
// given to funcs, check and run -p. Each exits 0 or 1 with a message,
// never a crash; nginx keeps serving; nothing is left attached.
func TestCraftedBinary(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	data, err := os.ReadFile(inst.Binary)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := exampleScript(t, "client-abort-499")
	outcomes := map[string]int{}
	for seed := int64(1); seed <= craftedMutations; seed++ {
		// A subtest each: its nginx stops at the subtest's end.
		t.Run(strconv.FormatInt(seed, 10), func(t *testing.T) {
			bin := filepath.Join(dir, fmt.Sprintf("nginx-%d", seed))
			if err := os.WriteFile(bin, mutateDWARF(t, data, seed), 0o755); err != nil {
				t.Fatal(err)
			}
			crafted := inst
			crafted.Binary = bin
			s, base := startPlain(t, crafted, 1, "")
			master := strconv.Itoa(s.MasterPID())
			var pids []int
			for _, argv := range [][]string{
				ngx("funcs", "--binary", bin, "ngx_http_finalize_request"),
				ngx("check", "--binary", bin, script),
				ngx("run", "-p", master, "-o", "json", "--duration", "1s"),
			} {
				p := runProbe(t, argv...)
				pids = append(pids, p.pid())
				checkNoPanic(t, p)
				code := p.exitCode()
				if code != 0 && code != 1 {
					t.Errorf("%s exited %d: %s", argv[1], code, p)
				}
				if msg := strings.TrimSpace(p.stderr.String()); code == 1 && (msg == "" || strings.HasSuffix(msg, ": EOF") || msg == "ngxprobe: EOF") {
					t.Errorf("%s failed without a clear message: %q", argv[1], msg)
				} else if code == 1 {
					t.Logf("%s: %s", argv[1], firstLineOf(msg))
				}
				outcomes[fmt.Sprintf("%s exit %d", argv[1], code)]++
			}
			checkServes(t, base)
			checkNoLeftovers(t, pids, []string{bin, "/proc/" + master + "/exe"})
		})
	}
	t.Logf("%d mutated binaries: %v", craftedMutations, outcomes)
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
