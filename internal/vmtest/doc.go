// Package vmtest boots the kernels ngxprobe's users run — Debian's own cloud
// kernels — in QEMU and runs a command in each (a Go test binary, ngxprobe,
// a shell script) with the host's files, returning its output and exit
// status. The host's kernel is not among them: tests run on it directly.
//
//	for _, k := range vmtest.Kernels(t) { // 5.10-bullseye, 6.1-bookworm, 6.12-bookworm-backports
//		t.Run(k.Name, func(t *testing.T) {
//			res := vmtest.Run(t, k, vmtest.RunOptions{
//				Argv:    []string{"/path/to/e2e.test", "-test.run", "^TestX$", "-test.v"},
//				Env:     []string{"NGXPROBE_BIN=/path/to/ngxprobe"},
//				Timeout: 5 * time.Minute,
//			})
//			if res.ExitCode != 0 {
//				t.Fatalf("exit %d (%v)\n%s\n%s", res.ExitCode, res.Err, res.Output, res.Console)
//			}
//		})
//	}
//
// # Kernels
//
// fetch-kernels.sh SUITE picks the newest linux-image-*-cloud-amd64-unsigned
// of the suite that apt lists (bullseye: 5.10, bookworm: 6.1,
// bookworm-backports: 6.12), downloads it with `apt-get download` (never
// installing it), unpacks it with dpkg-deb -x and runs depmod on its
// modules, into ${NGXPROBE_CACHE:-/var/cache/ngxprobe}/kernels/<version>/
// (atomically, under a lock, with a .complete marker). The suites the host
// does not list go in /etc/apt/sources.list.d/ngxprobe-kernels.sources,
// derived from debian.sources, pinned at priority 1 in
// /etc/apt/preferences.d/ngxprobe-kernels. A version the mirror lists but
// does not serve (404) is skipped for the next older one. All three have
// CONFIG_DEBUG_INFO_BTF=y (Kernel.BTF).
//
// # The guest
//
// Debian's cloud kernels have no 9p (CONFIG_NET_9P is not set), so the
// host's / reaches the guest over virtiofs (CONFIG_VIRTIO_FS: a module on
// 5.10 and 6.1, built in on 6.12), served by QEMU's virtiofsd
// (qemu-system-common on bookworm) from a recursive read-only clone of the
// host's mount tree in a mount namespace of its own: the guest cannot write
// the host's files, whatever it does. The guest's root is an overlay of that
// (lower) and a tmpfs (upper), so everything is where it is on the host —
// nginx and its libraries, the test binaries, /var/cache/ngxprobe, Go's
// module cache — and everything is writable, lock files and dpkg included,
// with every write staying in the guest's memory. On top the init mounts
// fresh proc, sysfs, devtmpfs, devpts, /dev/shm, /run (a tmpfs: the host's
// pid files stay out), bpffs on /sys/fs/bpf, cgroup2, debugfs and tracefs
// where they exist (nothing relies on tracefs), brings up lo, and binds the
// kernel's own modules to /lib/modules/<release>, so modprobe works.
// RunOptions.Shares are host directories the guest writes through to, at
// the same paths.
//
// The initramfs (built per kernel into its cache directory, named by its
// hash) holds busybox-static, the init script and the modules the init
// needs to reach the root — virtio_pci, virtiofs and overlay with their
// dependencies from .modinfo, as plain .ko (6.12's .ko.xz are decompressed
// when it is built) — and virtio_rng when the kernel has it. Run writes the
// command as run.sh into a per-run state directory (another virtiofs share,
// /run/vmtest in the guest); the init chroots into the overlay, runs it
// with stdin /dev/null and stdout and stderr to the state directory's
// output file, writes the exit status to its exit file and, as
// "VMTEST-EXIT <code>", to the console, and powers off.
//
// # QEMU
//
// -machine pc with 2 GiB (a shared memfd, as vhost-user needs) and 2 CPUs,
// the serial console on stdio (Result.Console), -no-reboot and panic=-1 so
// that a panic ends QEMU, and a timeout that kills it (Result.Err). KVM is
// used only when the CPU has vmx or svm and a probe runs a guest
// instruction (see Accel; a cloud VM's paravirtual /dev/kvm passes the
// probe but aborts on MSRs or hangs with a stock kernel); otherwise TCG,
// with -cpu max less la57 and cx16 (see tcgCPU). Under TCG on 2 cores a
// kernel boots to the command in about 2.5 s.
//
// # Environment
//
//	NGXPROBE_CACHE          the cache root (default /var/cache/ngxprobe)
//	NGXPROBE_VM_SUITES      the suites Kernels returns (default all three)
//	NGXPROBE_VM_ACCEL       tcg or kvm, instead of probing
//	NGXPROBE_VM_CONSOLE     when set, the console is copied to stderr live
//	NGXPROBE_VIRTIOFSD      the virtiofsd executable
//	NGXPROBE_FETCH_KERNELS  the fetch-kernels.sh script
//
// Kernels and Run need root (apt, virtiofsd, the mount namespace); without
// it, or without QEMU or the packages, they skip the test — and fail it when
// CI=true. setup-deps.sh vm (run by fetch-kernels.sh) installs QEMU,
// busybox-static, kmod, xz-utils and zstd.
package vmtest
