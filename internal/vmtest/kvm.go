package vmtest

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Accelerators QEMU can use.
const (
	AccelTCG = "tcg" // emulation: slow, works everywhere
	AccelKVM = "kvm" // hardware virtualization, when /dev/kvm really works
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmExitHLT             = 5
	kvmAPIVersion          = 12
)

var accel struct {
	once sync.Once
	name string
	why  string
}

// Accel returns the accelerator Run uses and why: $NGXPROBE_VM_ACCEL
// ("tcg" or "kvm") when set, else "kvm" when the CPU has vmx or svm and a
// probe runs a real-mode HLT in a KVM guest, else "tcg". A /dev/kvm alone
// proves little: a paravirtual one (kvm_pvm) runs the probe's HLT but not
// a stock kernel.
func Accel() (name, why string) {
	accel.once.Do(func() {
		switch v := os.Getenv("NGXPROBE_VM_ACCEL"); v {
		case AccelTCG, AccelKVM:
			accel.name, accel.why = v, "NGXPROBE_VM_ACCEL="+v
			return
		case "":
		default:
			accel.name, accel.why = AccelTCG, fmt.Sprintf("NGXPROBE_VM_ACCEL=%q is neither tcg nor kvm", v)
			return
		}
		if !cpuHasVirtualization() {
			// E.g. kvm_pvm in a cloud VM: /dev/kvm runs a real-mode HLT
			// but not a stock kernel (QEMU aborts on MSRs, or the guest
			// never prints a line).
			accel.name, accel.why = AccelTCG, "the CPU has no vmx or svm flag (no hardware virtualization for a stock kernel)"
			return
		}
		if err := probeKVM(5 * time.Second); err != nil {
			accel.name, accel.why = AccelTCG, "KVM does not work here: "+err.Error()
			return
		}
		accel.name, accel.why = AccelKVM, "KVM runs a guest"
	})
	return accel.name, accel.why
}

// cpuHasVirtualization reports whether /proc/cpuinfo lists vmx or svm.
func cpuHasVirtualization() bool {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, flags, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(flags) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

// probeKVM makes a KVM guest with one page of memory holding HLT, runs it
// in real mode and wants it to exit on that HLT.
func probeKVM(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- runKVMProbe() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		// The goroutine stays blocked in KVM_RUN; the process is a test.
		return errors.New("KVM_RUN did not return")
	}
}

func runKVMProbe() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(kvm)
	ioctl := func(fd int, req uintptr, arg uintptr) (int, error) {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e != 0 {
			return int(r), e
		}
		return int(r), nil
	}
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		return fmt.Errorf("KVM_GET_API_VERSION: %d, %v", v, err)
	}
	vm, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	defer unix.Close(vm)
	mem, err := unix.Mmap(-1, 0, 0x1000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	mem[0] = 0xf4 // hlt
	region := struct {
		slot, flags                  uint32
		guestPhys, size, userAddress uint64
	}{0, 0, 0x1000, 0x1000, uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	vcpu, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	defer unix.Close(vcpu)
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(run)
	var sregs [312]byte // struct kvm_sregs; cs (struct kvm_segment) first
	if _, err := ioctl(vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	clear(sregs[0:8])   // cs.base = 0
	clear(sregs[12:14]) // cs.selector = 0
	if _, err := ioctl(vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	var regs [18]uint64 // struct kvm_regs: 16 GPRs, rip, rflags
	regs[16] = 0x1000
	regs[17] = 2
	if _, err := ioctl(vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	if _, err := ioctl(vcpu, kvmRun, 0); err != nil {
		return fmt.Errorf("KVM_RUN: %w", err)
	}
	if reason := *(*uint32)(unsafe.Pointer(&run[8])); reason != kvmExitHLT {
		return fmt.Errorf("KVM_RUN exited with reason %d, not HLT", reason)
	}
	return nil
}
