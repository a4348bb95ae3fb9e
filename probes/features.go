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
)

// Sentinel errors for what the machine lacks.
var (
	ErrPermission     = errors.New("missing privileges")
	ErrMissingFeature = errors.New("missing kernel feature")
)

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
			return fmt.Errorf("%w: attaching uprobes needs %s (or root / CAP_SYS_ADMIN); run with sudo, or grant them with setcap cap_bpf,cap_perfmon+ep", ErrPermission, strings.Join(missing, " and "))
		}
	}
	checks := []struct {
		what string
		why  string
		test func() error
	}{
		{"BPF ring buffer (Linux 5.8)", "events travel through it", func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{"bpf_probe_read_user (Linux 5.5)", "reads nginx's memory", func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadUser) }},
		{"bpf_ringbuf_reserve (Linux 5.8)", "writes events", func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnRingbufReserve) }},
		{"uprobe PMU (/sys/bus/event_source/devices/uprobe)", "attaches uprobes without tracefs", func() error {
			_, err := os.Stat("/sys/bus/event_source/devices/uprobe/type")
			return err
		}},
	}
	for _, c := range checks {
		if err := c.test(); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w: %s is missing; ngxprobe needs it because it %s (kernel 5.8 or newer with CONFIG_UPROBE_EVENTS and CONFIG_BPF_EVENTS)", ErrMissingFeature, c.what, c.why)
			}
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: probing %s: %v", ErrPermission, c.what, err)
			}
			return fmt.Errorf("probing %s: %w", c.what, err)
		}
	}
	return nil
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
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, 0, fmt.Errorf("%w: kernel BTF (/sys/kernel/btf/vmlinux) is needed to follow an nginx master's workers: %v", ErrMissingFeature, err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return 0, 0, fmt.Errorf("%w: task_struct in kernel BTF: %v", ErrMissingFeature, err)
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
		return 0, 0, fmt.Errorf("%w: task_struct has no real_parent or tgid", ErrMissingFeature)
	}
	return realParent, tgid, nil
}

// returnOffsets locate the return addresses uretprobes replaced: a task's
// uprobe_task keeps, per pending uretprobe, the stack slot and the
// original address (kernel/events/uprobes.c, struct return_instance).
type returnOffsets struct {
	utask, instances, stack, orig, next int32
	ok                                  bool
}

// uretprobeOffsets reads them from kernel BTF; without them, stacks stop
// at the first replaced return address, with a reason that says so.
func uretprobeOffsets() returnOffsets {
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
