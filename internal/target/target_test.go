package target

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fakeProc writes a /proc with the given processes: pid -> (cmdline, ppid).
func fakeProc(t *testing.T, procs map[int][2]string) string {
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(p[0]+"\x00"), 0o644)
		os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(pid)+" (x y) S "+p[1]+" 1 1"), 0o644)
		os.Symlink("/usr/sbin/nginx", filepath.Join(dir, "exe"))
	}
	return root
}

func TestFromPID(t *testing.T) {
	root := fakeProc(t, map[int][2]string{
		10: {"nginx: master process /usr/sbin/nginx", "1"},
		11: {"nginx: worker process", "10"},
		12: {"nginx: worker process", "10"},
		20: {"sleep 30", "1"},
	})
	master, err := FromPID(root, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !master.Master || len(master.Workers) != 2 || master.Path != filepath.Join(root, "10", "exe") {
		t.Errorf("master = %+v, want a master with 2 workers read through /proc/10/exe", master)
	}
	worker, err := FromPID(root, 11)
	if err != nil || worker.Master {
		t.Errorf("worker = %+v, %v; want a single worker", worker, err)
	}
	// The fake sleep's exe also points at nginx, so only its title tells;
	// a real one points at /usr/bin/sleep.
	os.Remove(filepath.Join(root, "20", "exe"))
	os.Symlink("/usr/bin/sleep", filepath.Join(root, "20", "exe"))
	if _, err := FromPID(root, 20); !errors.Is(err, ErrNotNginx) {
		t.Errorf("sleep: err = %v, want ErrNotNginx", err)
	}
	if _, err := FromPID(root, 99); !errors.Is(err, ErrNoProcess) {
		t.Errorf("exited: err = %v, want ErrNoProcess", err)
	}
}
