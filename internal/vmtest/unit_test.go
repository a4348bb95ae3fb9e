package vmtest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// TestCPIO unpacks writeCPIO's archive with busybox cpio, as the kernel
// would unpack the initramfs.
func TestCPIO(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		testenv.SkipOrFail(t, "no %s (setup-deps.sh vm installs busybox-static)", Busybox)
	}
	archive, err := writeCPIO([]cpioFile{
		{Name: "/init", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "/etc/vmtest/odd", Mode: 0o644, Data: []byte("12345")},
		{Name: "/proc", Mode: fs.ModeDir | 0o555},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(archive)%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", len(archive))
	}
	dir := t.TempDir()
	cmd := exec.Command(Busybox, "cpio", "-i", "-d")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(string(archive))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "etc/vmtest/odd")); err != nil || string(got) != "12345" {
		t.Errorf("etc/vmtest/odd: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "init")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("init: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "proc")); err != nil || !fi.IsDir() {
		t.Errorf("proc: %v, %v", fi, err)
	}
}

// TestRunScript runs the guest's run.sh on the host: the directory, the
// environment and every argument get through the shell quoting.
func TestRunScript(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "it's a dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	argv := []string{"/bin/sh", "-c", `printf '%s|' "$PWD" "$FOO" "$HOME" "$@"`, "sh", "a b", `'"$x`, ""}
	script := filepath.Join(t.TempDir(), "run.sh")
	opts := RunOptions{Argv: argv, Env: []string{"FOO=it's $HOME"}, Dir: dir}
	if err := os.WriteFile(script, []byte(runScript(opts)), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/sh", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := dir + "|it's $HOME|/root|a b|'\"$x||"
	if string(out) != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}

func TestExitCode(t *testing.T) {
	dir := t.TempDir()
	if _, ok := exitCode(dir, "boot\nVMTEST-START\n"); ok {
		t.Error("an exit status without a marker")
	}
	if n, ok := exitCode(dir, "VMTEST-EXIT 125\nmore\nVMTEST-EXIT 3\n"); !ok || n != 3 {
		t.Errorf("console: %d, %v; want 3", n, ok)
	}
	if err := os.WriteFile(filepath.Join(dir, "exit"), []byte("42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, ok := exitCode(dir, "VMTEST-EXIT 3\n"); !ok || n != 42 {
		t.Errorf("exit file: %d, %v; want 42", n, ok)
	}
}
