package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Busybox is the static busybox (Debian's busybox-static) that the
// initramfs runs its init script with.
const Busybox = "/bin/busybox"

// Guest tags and paths the init script and Run agree on.
const (
	rootTag  = "hostroot" // virtiofs tag of the host's / (read-only)
	stateTag = "vmtest"   // virtiofs tag of the run's state directory
	// GuestStateDir is where the guest sees the run's state directory:
	// run.sh (the command), mounts, output and exit.
	GuestStateDir = "/run/vmtest"
)

// neededModules are what the init script needs to reach the host's files:
// virtio-pci for the device, virtiofs (and fuse) for the files, overlay for
// a writable root. Each must be built in or a module; their dependencies
// (virtio, virtio_ring, virtio_pci_modern_dev, ...) come from .modinfo.
var neededModules = []string{"virtio_pci", "virtiofs", "overlay"}

// optionalModules are loaded when the kernel has them: virtio-rng feeds the
// guest's entropy pool, so getrandom(2) does not wait at boot.
var optionalModules = []string{"virtio_rng"}

// initScript is the guest's PID 1 (run by busybox sh). It mounts the host's
// / read-only (virtiofs) under a tmpfs overlay, so that everything is where
// it is on the host and every write stays in the guest; gives the new root
// its own proc, sys, dev, /run, bpffs, cgroup2 and debugfs; mounts the run's
// state directory and the shares it lists; then chroots and runs
// GuestStateDir/run.sh, and powers off. The exit status goes to the state
// directory's "exit" file and, as "VMTEST-EXIT <code>", to the console.
const initScript = `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "vmtest-init: $*"; }
die() {
	say "$*"
	echo "VMTEST-EXIT 125"
	poweroff -f
	reboot -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say "kernel $(uname -r)"
while read -r m; do
	insmod "/modules/$m" || die "insmod $m failed"
done </etc/vmtest/modules
release=$(cat /etc/vmtest/release)
moddir=$(cat /etc/vmtest/moddir)

mkdir -p /lower /rw /newroot
mount -t virtiofs -o ro ` + rootTag + ` /lower || die "can't mount the host's / (virtiofs ` + rootTag + `)"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	die "can't mount the overlay root"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=0755 run $R/run
mount -t bpf -o mode=0700 bpf $R/sys/fs/bpf || die "can't mount bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || say "no cgroup2"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null || say "no debugfs"
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null || true
mkdir -p $R` + GuestStateDir + `
mount -t virtiofs ` + stateTag + ` $R` + GuestStateDir + ` || die "can't mount the state directory"
S=$R` + GuestStateDir + `
if [ -f $S/mounts ]; then
	while read -r tag dir; do
		mkdir -p "$R$dir" && mount -t virtiofs "$tag" "$R$dir" || die "can't mount $tag on $dir"
	done <$S/mounts
fi
# The kernel's own modules where modprobe looks for them.
if [ -d "$R$moddir" ]; then
	mkdir -p "$R/lib/modules/$release" && mount --bind "$R$moddir" "$R/lib/modules/$release"
fi
ip link set lo up
hostname vmtest
echo "VMTEST-START"
chroot $R /bin/sh ` + GuestStateDir + `/run.sh </dev/null >$S/output 2>&1
rc=$?
echo "$rc" >$S/exit
sync
echo "VMTEST-EXIT $rc"
poweroff -f
reboot -f
`

// kernelModule is one .ko file to put in the initramfs.
type kernelModule struct {
	name string // "virtio_ring"
	path string // in the kernel's modules directory, maybe compressed
	data []byte // uncompressed
	deps []string
}

// buildInitramfs makes the initramfs of k (a cpio archive) and writes it to
// k.Dir/initramfs-<hash8>.cpio, unless that file is already there; it
// returns the file and the names of the modules it loads, in order.
func buildInitramfs(k Kernel) (string, []string, error) {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return "", nil, fmt.Errorf("busybox (setup-deps.sh vm installs busybox-static): %w", err)
	}
	if err := checkStatic(Busybox); err != nil {
		return "", nil, err
	}
	mods, err := resolveModules(k.Modules)
	if err != nil {
		return "", nil, err
	}
	files := []cpioFile{
		{Name: "/init", Mode: 0o755, Data: []byte(initScript)},
		{Name: "/bin/busybox", Mode: 0o755, Data: bb},
		{Name: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "/dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Major: 1, Minor: 3},
		{Name: "/proc", Mode: fs.ModeDir | 0o755},
		{Name: "/sys", Mode: fs.ModeDir | 0o755},
		{Name: "/tmp", Mode: fs.ModeDir | 0o1777},
		{Name: "/etc/vmtest/release", Mode: 0o644, Data: []byte(k.Release + "\n")},
		{Name: "/etc/vmtest/moddir", Mode: 0o644, Data: []byte(k.Modules + "\n")},
	}
	var order []string
	var list strings.Builder
	for _, m := range mods {
		file := m.name + ".ko"
		files = append(files, cpioFile{Name: "/modules/" + file, Mode: 0o644, Data: m.data})
		fmt.Fprintln(&list, file)
		order = append(order, m.name)
	}
	files = append(files, cpioFile{Name: "/etc/vmtest/modules", Mode: 0o644, Data: []byte(list.String())})
	archive, err := writeCPIO(files)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(archive)
	out := filepath.Join(k.Dir, "initramfs-"+hex.EncodeToString(sum[:4])+".cpio")
	if _, err := os.Stat(out); err == nil {
		now := time.Now()
		os.Chtimes(out, now, now) // in use: see the pruning below
		return out, order, nil
	}
	tmp, err := os.CreateTemp(k.Dir, ".initramfs-*")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(archive); err != nil {
		tmp.Close()
		return "", nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", nil, err
	}
	if err := tmp.Close(); err != nil {
		return "", nil, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", nil, err
	}
	// Earlier builds (another init script, busybox or module set) that no
	// run has used for a day.
	if old, err := filepath.Glob(filepath.Join(k.Dir, "initramfs-*.cpio")); err == nil {
		for _, f := range old {
			if fi, err := os.Stat(f); err == nil && f != out && time.Since(fi.ModTime()) > 24*time.Hour {
				os.Remove(f)
			}
		}
	}
	return out, order, nil
}

// checkStatic fails for a dynamically linked executable: the initramfs has
// no libc.
func checkStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (want busybox-static's)", file)
		}
	}
	return nil
}

// resolveModules finds neededModules and optionalModules in the modules
// directory dir (/lib/modules/<release> of the kernel package), with their
// dependencies, dependencies first. A needed module that is neither a
// module nor built in (modules.builtin) is an error.
func resolveModules(dir string) ([]kernelModule, error) {
	files := map[string]string{} // module name -> path
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := moduleName(d.Name()); ok {
			files[name] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if name, ok := moduleName(filepath.Base(sc.Text())); ok {
				builtin[name] = true
			}
		}
	}

	var out []kernelModule
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, needed bool) error
	visit = func(name string, needed bool) error {
		name = normalizeModule(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		p, ok := files[name]
		if !ok {
			if builtin[name] || !needed {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("%s: module %s is neither built in nor a module", dir, name)
		}
		state[name] = 1
		data, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, kernelModule{name: name, path: p, data: data, deps: deps})
		return nil
	}
	for _, m := range neededModules {
		if err := visit(m, true); err != nil {
			return nil, err
		}
	}
	for _, m := range optionalModules {
		if err := visit(m, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// moduleName returns the module name of a .ko file name (compressed or
// not), with '-' as '_', as the kernel names modules.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if base, ok := strings.CutSuffix(file, ext); ok {
			return normalizeModule(base), true
		}
	}
	return "", false
}

func normalizeModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

// readModule returns the uncompressed contents of a module file: .ko.xz and
// .ko.zst through xz and zstd (setup-deps.sh vm installs them), .ko.gz with
// compress/gzip, so that busybox's insmod gets plain ELF.
func readModule(p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(p, ".ko.gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return io.ReadAll(z)
	case strings.HasSuffix(p, ".ko.xz"):
		return decompress(p, "xz", "-dc", p)
	case strings.HasSuffix(p, ".ko.zst"):
		return decompress(p, "zstd", "-dcq", p)
	}
	return nil, fmt.Errorf("%s: not a kernel module", p)
}

func decompress(p, tool string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(tool, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %v: %s", p, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// moduleDepends returns the "depends=" names of a module's .modinfo.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, d)
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}
