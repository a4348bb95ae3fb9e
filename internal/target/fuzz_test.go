package target

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzModulesOf reads hostile /proc/PID/maps through a fake /proc: paths
// with spaces, escaped newlines and " (deleted)" in their names, a path
// of PATH_MAX, missing fields, too many lines. Its seeds are those of
// stacks.FuzzParseMaps (real maps and hostile variants), copied by
// TestCopyFuzzSeeds.
func FuzzModulesOf(f *testing.F) {
	f.Fuzz(func(t *testing.T, maps string) {
		root := fakeProc(t, map[int][2]string{10: {"nginx: master process", "1"}})
		if err := os.WriteFile(filepath.Join(root, "10", "maps"), []byte(maps), 0o644); err != nil {
			t.Fatal(err)
		}
		mods, err := ModulesOf(root, 10)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pid 10") {
				t.Fatalf("ModulesOf: error %q does not name the process", err)
			}
			return
		}
		if len(mods) > maxModules() {
			t.Fatalf("ModulesOf: %d modules, more than %d", len(mods), maxModules())
		}
		for _, m := range mods {
			if !strings.HasPrefix(m.Path, root+"/10/") || !strings.HasPrefix(m.MappedPath, "/") {
				t.Fatalf("module %+v: opened from outside the process's /proc directory, or not a path", m)
			}
			if m.Deleted == strings.Contains(m.Path, "/root/") {
				t.Fatalf("module %+v: a deleted file must be read through map_files, another through root", m)
			}
		}
	})
}

// TestCopyFuzzSeeds copies the seeds of stacks.FuzzParseMaps, which takes
// the same argument, to FuzzModulesOf's corpus. It runs only when asked:
//
//	NGXPROBE_FUZZ_SEEDS=1 go test ./internal/target -run TestCopyFuzzSeeds
func TestCopyFuzzSeeds(t *testing.T) {
	if os.Getenv("NGXPROBE_FUZZ_SEEDS") == "" {
		t.Skip("writes testdata/fuzz; set NGXPROBE_FUZZ_SEEDS=1 to run it")
	}
	from, err := filepath.Glob("../../stacks/testdata/fuzz/FuzzParseMaps/*")
	if err != nil || len(from) == 0 {
		t.Fatalf("stacks' seeds: %v %v (generate them first)", from, err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzModulesOf")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range from {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
