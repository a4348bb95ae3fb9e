package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guestEnv marks the test binary's run inside a guest (TestInGuest); its
// value is the kernel release the guest must have.
const guestEnv = "VMTEST_GUEST_RELEASE"

// TestKernels boots each kernel once and runs, in the guest: uname -r, a
// look at /sys/kernel/btf/vmlinux and the mounts, a static Go binary built
// here (guestprobe: uname(2), BPF_PROG_LOAD of a socket filter, the
// kernel's BTF, a uprobe on itself), this test binary itself (TestInGuest),
// a write to a share and writes to the host's tree (which stay in the
// guest, or fail); then exits 7, to see the status come back.
func TestKernels(t *testing.T) {
	ks := Kernels(t)
	accel, why := Accel()
	t.Logf("accelerator: %s (%s)", accel, why)

	bin := t.TempDir()
	probe := filepath.Join(bin, "guestprobe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/guestprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build guestprobe: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostFile := fmt.Sprintf("/var/tmp/vmtest-host-untouched-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(hostFile) })

	total := time.Now()
	var summary []string
	for _, k := range ks {
		t.Run(k.Name, func(t *testing.T) {
			t.Logf("%s %s: %s, BTF %v, initramfs modules %v", k.Package, k.Version, k.Release, k.BTF, k.InitModules)
			if !k.BTF {
				t.Errorf("%s: CONFIG_DEBUG_INFO_BTF is not y", k.Config)
			}
			share := t.TempDir()
			script := strings.Join([]string{
				"echo uname=$(uname -r)",
				"test -e /sys/kernel/btf/vmlinux && echo btf-file=yes",
				"grep -q ' /sys/fs/bpf bpf ' /proc/mounts && echo bpffs=yes",
				"grep -q ' / overlay ' /proc/mounts && echo root=overlay",
				"ip -o link show lo | grep -q 'state UNKNOWN\\|UP' && echo lo=up",
				"test -d /lib/modules/$(uname -r)/kernel && echo modules=yes",
				fmt.Sprintf("echo written >%s && echo overlay-write=ok", hostFile),
				// The host's tree itself, mounted again writable: the
				// daemon's read-only clone refuses the write.
				"mkdir -p /mnt/vmtest-host && mount -t virtiofs " + rootTag + " /mnt/vmtest-host &&",
				fmt.Sprintf("  { echo x >/mnt/vmtest-host%s; } 2>&1 | grep -q 'Read-only file system' && echo host-readonly=yes", hostFile),
				probe,
				fmt.Sprintf("%s -test.run '^TestInGuest$' -test.v -test.count=1", self),
				fmt.Sprintf("echo from-the-guest >%s/out", share),
				"exit 7",
			}, "\n")
			res := Run(t, k, RunOptions{
				Argv:    []string{"/bin/sh", "-c", script},
				Env:     []string{guestEnv + "=" + k.Release},
				Dir:     bin,
				Timeout: 4 * time.Minute,
				Shares:  []string{share},
			})
			summary = append(summary, fmt.Sprintf("%s boot %v run %v", k.Name, res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond)))
			t.Logf("%s: accel %s, boot %v, elapsed %v, exit %d", k.Name, res.Accel, res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond), res.ExitCode)
			if res.ExitCode != 7 {
				t.Fatalf("exit %d (want 7), err %v\noutput:\n%s\nconsole:\n%s", res.ExitCode, res.Err, res.Output, tail(res.Console, 60))
			}
			for _, want := range []string{
				"uname=" + k.Release,
				"btf-file=yes",
				"bpffs=yes",
				"root=overlay",
				"lo=up",
				"modules=yes",
				"overlay-write=ok",
				"host-readonly=yes",
				"release=" + k.Release,
				"bpf=ok",
				"btf=ok",
				"uprobe=ok",
				"--- PASS: TestInGuest",
			} {
				if !strings.Contains(res.Output, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s\nconsole:\n%s", res.Output, tail(res.Console, 40))
			}
			if got, err := os.ReadFile(filepath.Join(share, "out")); err != nil || string(got) != "from-the-guest\n" {
				t.Errorf("share: %q, %v", got, err)
			}
			if _, err := os.Stat(hostFile); err == nil {
				t.Errorf("the guest wrote %s on the host", hostFile)
			}
		})
	}
	t.Logf("boot times: %s; all kernels: %v", strings.Join(summary, "; "), time.Since(total).Round(time.Millisecond))
}

// TestInGuest runs only in a guest, started by TestKernels.
func TestInGuest(t *testing.T) {
	want := os.Getenv(guestEnv)
	if want == "" {
		t.Skip("runs in a vmtest guest only")
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(u.Release[:]); got != want {
		t.Errorf("uname release %q, want %q", got, want)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Error(err)
	}
	if os.Geteuid() != 0 {
		t.Errorf("euid %d in the guest", os.Geteuid())
	}
}

// TestTimeout: a guest that overruns its timeout is killed, with no exit
// status and the reason in Err.
func TestTimeout(t *testing.T) {
	ks := Kernels(t)
	res := Run(t, ks[0], RunOptions{Argv: []string{"sleep", "600"}, Timeout: 3 * time.Second})
	if res.ExitCode != -1 || res.Err == nil || !strings.Contains(res.Err.Error(), "timed out") {
		t.Fatalf("exit %d, err %v; want -1 and a timeout", res.ExitCode, res.Err)
	}
	if res.Elapsed > 15*time.Second {
		t.Errorf("killing QEMU took %v", res.Elapsed)
	}
}
