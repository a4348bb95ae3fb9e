package main

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capabilities a trace keeps once its probes are attached (and, with
// stacks, the workers' modules indexed). Reading the ring buffer, the
// counters and the aggregations goes through file descriptors ngxprobe
// already holds, but kernels before 6.x with unprivileged BPF disabled
// (Debian's default, kernel.unprivileged_bpf_disabled=2) refuse every
// bpf() command without CAP_BPF, map reads by fd included (seen on 5.10:
// the summary read zeros): CAP_BPF is kept. Naming the frames of workers
// that a reload starts means reading their /proc/PID/maps and files, which
// CAP_SYS_PTRACE allows for another user's nginx; it is kept too.
// CAP_SYS_ADMIN, CAP_PERFMON and the rest are dropped, from the permitted
// set too: without them no uprobe can be opened, so a bug in the
// long-running part cannot trace anything new.
var keptCaps = []uintptr{unix.CAP_BPF, unix.CAP_SYS_PTRACE}

// dropCapabilities keeps only keptCaps, in every thread of the process:
// Linux capabilities are per thread, and the Go runtime runs many.
func dropCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	var keep [2]unix.CapUserData
	for _, c := range keptCaps {
		i, bit := c/32, uint32(1)<<(c%32)
		if data[i].Permitted&bit != 0 {
			keep[i].Permitted |= bit
			keep[i].Effective |= bit
		}
	}
	// AllThreadsSyscall needs a binary without cgo, which ngxprobe is.
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&keep[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	return nil
}
