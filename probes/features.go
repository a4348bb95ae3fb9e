package probes

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
)

// Sentinel errors for what the machine lacks. The package's errors that
// match ErrMissingFeature also match ebpf.ErrNotSupported, and unwrap to
// what the failed check returned.
var (
	ErrPermission     = errors.New("missing privileges")
	ErrMissingFeature = errors.New("missing kernel feature")
)

// featureError is a missing kernel feature: errors.Is matches it with
// ErrMissingFeature and ebpf.ErrNotSupported, whichever way the kernel
// showed it (ebpf.ErrNotSupported from a feature probe, os.ErrNotExist
// from sysfs, a failed BTF lookup).
type featureError struct {
	err   error // the message, wrapping ErrMissingFeature
	cause error // what the check returned when err does not wrap it, or nil
}

// missingFeature returns a featureError: "missing kernel feature: " and
// the formatted message, which may wrap errors with %w; cause, when not
// nil, is unwrapped too but left out of the message.
func missingFeature(cause error, format string, args ...any) error {
	return &featureError{err: fmt.Errorf("%w: "+format, append([]any{ErrMissingFeature}, args...)...), cause: cause}
}

func (e *featureError) Error() string { return e.err.Error() }

func (e *featureError) Is(target error) bool { return target == ebpf.ErrNotSupported }

func (e *featureError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.err}
	}
	return []error{e.err, e.cause}
}

// Linux capability numbers.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// CheckSupport explains, before anything is loaded, what stops tracing.
func CheckSupport() error {
	eff, err := effectiveCaps()
	if err == nil {
		has := func(c uint) bool { return eff&(1<<c) != 0 }
		if !has(capSysAdmin) && !(has(capBPF) && has(capPerfmon)) {
			var missing []string
			if !has(capBPF) {
				missing = append(missing, "CAP_BPF")
			}
			if !has(capPerfmon) {
				missing = append(missing, "CAP_PERFMON")
			}
			return fmt.Errorf("%w: loading BPF programs needs %s, and opening uprobes CAP_SYS_ADMIN (the kernel's uprobe PMU asks for it); tracing another user's nginx needs CAP_SYS_PTRACE too. Run with sudo, or grant cap_sys_admin,cap_sys_ptrace", ErrPermission, strings.Join(missing, " and "))
		}
	}
	// Feature probes create maps too: before Linux 5.11 those are charged
	// to the user's RLIMIT_MEMLOCK, which another running trace of the
	// same user may have used up.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising the memlock limit: %w", err)
	}
	for _, c := range requiredChecks {
		if err := c.test(); err != nil {
			return checkFailed(c.what, c.why, err)
		}
	}
	return nil
}

// requiredCheck is a kernel feature ngxprobe cannot trace without;
// CheckSupport stops at the first missing one, Report lists them all.
type requiredCheck struct {
	name, since, what, why, report string
	test                           func() error
}

var requiredChecks = []requiredCheck{
	{"BPF ring buffer", "5.8", "BPF ring buffer (Linux 5.8)", "events travel through it", "events",
		func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{"bpf_probe_read_user", "5.5", "bpf_probe_read_user (Linux 5.5)", "reads nginx's memory", "reading nginx's memory",
		func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadUser) }},
	{"bpf_ringbuf_reserve", "5.8", "bpf_ringbuf_reserve (Linux 5.8)", "writes events", "writing events",
		func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnRingbufReserve) }},
	{"uprobe PMU", "4.17", "uprobe PMU (/sys/bus/event_source/devices/uprobe)", "attaches uprobes without tracefs", "uprobes without tracefs (CONFIG_UPROBE_EVENTS)",
		func() error {
			_, err := os.Stat("/sys/bus/event_source/devices/uprobe/type")
			return err
		}},
}

// uprobeRefused explains a uprobe the kernel refused for lack of
// privilege: perf's uprobe PMU wants CAP_SYS_ADMIN (seen on 6.18, with
// kernel.perf_event_paranoid at -1 too), where loading programs is content
// with CAP_BPF and CAP_PERFMON.
func uprobeRefused(err error) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	if eff, cerr := effectiveCaps(); cerr == nil && eff&(1<<capSysAdmin) == 0 {
		return fmt.Errorf("%w: opening a uprobe needs CAP_SYS_ADMIN here: the kernel's uprobe PMU refuses CAP_BPF and CAP_PERFMON alone: %w", ErrPermission, err)
	}
	return err
}

// checkFailed explains the failed check of what, which ngxprobe needs
// because it why.
func checkFailed(what, why string, err error) error {
	if mode := lockdown(); mode == "confidentiality" && errors.Is(err, ebpf.ErrNotSupported) {
		return missingFeature(err, "%s is refused: the kernel is locked down (lockdown=confidentiality, %s), which keeps BPF programs from reading memory; ngxprobe needs it because it %s. Boot with lockdown=integrity or none to trace", what, lockdownFile, why)
	}
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
		return missingFeature(err, "%s is missing; ngxprobe needs it because it %s (kernel 5.8 or newer with CONFIG_UPROBE_EVENTS and CONFIG_BPF_EVENTS)", what, why)
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: probing %s: %w", ErrPermission, what, err)
	}
	return fmt.Errorf("probing %s: %w", what, err)
}

func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// taskOffsets reads task_struct's layout from the kernel's BTF, so the
// parent filter needs no kernel headers.
func taskOffsets() (realParent, tgid int16, err error) {
	if err := readKernelRefused(); err != nil {
		return 0, 0, fmt.Errorf("%w; it is needed to follow an nginx master's workers: trace one worker with -p WORKER_PID instead", err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, 0, missingFeature(nil, "kernel BTF (/sys/kernel/btf/vmlinux) is needed to follow an nginx master's workers: %w", err)
	}
	return taskOffsetsIn(spec)
}

// taskOffsetsIn reads task_struct's layout from spec.
func taskOffsetsIn(spec *btf.Spec) (realParent, tgid int16, err error) {
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return 0, 0, missingFeature(nil, "task_struct in kernel BTF: %w", err)
	}
	found := 0
	for _, m := range task.Members {
		switch m.Name {
		case "real_parent":
			realParent = int16(m.Offset.Bytes())
			found++
		case "tgid":
			tgid = int16(m.Offset.Bytes())
			found++
		}
	}
	if found != 2 {
		return 0, 0, missingFeature(nil, "task_struct has no real_parent or tgid")
	}
	return realParent, tgid, nil
}

// haveTaskBTF reports whether this kernel loads a uprobe program that
// reads current->real_parent->tgid by direct loads (parentTgidBTF); when
// it does not (before 5.11), the worker check reads them with
// bpf_probe_read_kernel, as a feature error says.
func haveTaskBTF(realParentOff, tgidOff int16) error {
	insns := append(parentTgidBTF(realParentOff, tgidOff), asm.Mov.Imm(asm.R0, 0), asm.Return())
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: insns})
	if err != nil {
		return missingFeature(err, "uprobe programs may not load through bpf_get_current_task_btf (Linux 5.11), so the workers check reads the parent with two bpf_probe_read_kernel per hit")
	}
	return prog.Close()
}

// returnOffsets locate the return addresses uretprobes replaced: a task's
// uprobe_task keeps, per pending return probe, the stack slot and the
// original address (kernel/events/uprobes.c, struct return_instance).
type returnOffsets struct {
	utask, instances, stack, orig, next int32
	ok                                  bool
}

// loadReturnOffsets reads them from kernel BTF; without them, stacks stop
// at the first replaced return address, with a reason that says so.
func loadReturnOffsets() returnOffsets {
	if readKernelRefused() != nil {
		return returnOffsets{}
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return returnOffsets{}
	}
	member := func(typ, name string) (int32, bool) {
		var st *btf.Struct
		if err := spec.TypeByName(typ, &st); err != nil {
			return 0, false
		}
		for _, m := range st.Members {
			if m.Name == name {
				return int32(m.Offset.Bytes()), true
			}
		}
		return 0, false
	}
	var r returnOffsets
	var ok [5]bool
	r.utask, ok[0] = member("task_struct", "utask")
	r.instances, ok[1] = member("uprobe_task", "return_instances")
	r.stack, ok[2] = member("return_instance", "stack")
	r.orig, ok[3] = member("return_instance", "orig_ret_vaddr")
	r.next, ok[4] = member("return_instance", "next")
	r.ok = ok == [5]bool{true, true, true, true, true}
	return r
}
