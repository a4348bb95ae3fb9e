package target

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
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
		os.WriteFile(filepath.Join(dir, "maps"), nil, 0o644)
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

// ModulesOf lists each file mapped as code once, except the executable,
// and reaches a deleted one through map_files.
func TestModulesOf(t *testing.T) {
	root := fakeProc(t, map[int][2]string{10: {"nginx: master process", "1"}})
	maps := `55d0c0000000-55d0c0010000 r--p 00000000 08:01 100 /usr/sbin/nginx
55d0c0010000-55d0c0100000 r-xp 00010000 08:01 100 /usr/sbin/nginx
7f0000000000-7f0000010000 r-xp 00002000 08:01 200 /usr/lib/nginx/modules/ngx_stream_module.so
7f0000010000-7f0000020000 r--p 00012000 08:01 200 /usr/lib/nginx/modules/ngx_stream_module.so
7f0000020000-7f0000030000 r-xp 00003000 08:01 201 /usr/lib/nginx/modules/ngx_mail_module.so (deleted)
7f0000030000-7f0000040000 r-xp 00000000 00:00 0
7f0000040000-7f0000050000 r-xp 00028000 08:01 300 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000050000-7f0000060000 r-xp 00028000 08:01 300 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
`
	if err := os.WriteFile(filepath.Join(root, "10", "maps"), []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := ModulesOf(root, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []Module{
		{Path: root + "/10/root/usr/lib/nginx/modules/ngx_stream_module.so", MappedPath: "/usr/lib/nginx/modules/ngx_stream_module.so"},
		{Path: root + "/10/map_files/7f0000020000-7f0000030000", MappedPath: "/usr/lib/nginx/modules/ngx_mail_module.so", Deleted: true},
		{Path: root + "/10/root/usr/lib/x86_64-linux-gnu/libc.so.6", MappedPath: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
	}
	if len(mods) != len(want) {
		t.Fatalf("modules %+v, want %+v", mods, want)
	}
	for i := range want {
		if mods[i] != want[i] {
			t.Errorf("module %d = %+v, want %+v", i, mods[i], want[i])
		}
	}
}

// A process whose title does not say nginx is nginx when its executable
// defines ngx_cycle, whatever the file is called.
func TestFromPIDByContent(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	os.WriteFile(src, []byte("void *ngx_cycle; int main(void) { return 0; }\n"), 0o644)
	exe := filepath.Join(dir, "gateway")
	if out, err := exec.Command("cc", "-o", exe, src).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "cc: %v\n%s", err, out)
	}
	root := fakeProc(t, map[int][2]string{30: {"gateway -c /etc/gw.conf", "1"}})
	os.Remove(filepath.Join(root, "30", "exe"))
	os.Symlink(exe, filepath.Join(root, "30", "exe"))
	got, err := FromPID(root, 30)
	if err != nil || got.Master || got.Display != exe {
		t.Errorf("FromPID = %+v, %v; want a single nginx process running %s", got, err, exe)
	}
}

// A process whose executable cannot be read says why, not "()".
func TestFromPIDUnreadableExe(t *testing.T) {
	root := fakeProc(t, map[int][2]string{40: {"/sbin/init", "0"}})
	os.Remove(filepath.Join(root, "40", "exe"))
	_, err := FromPID(root, 40)
	if err == nil || strings.Contains(err.Error(), "()") || !strings.Contains(err.Error(), "exe") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("FromPID with no readable exe: %v; want the reason", err)
	}
}
