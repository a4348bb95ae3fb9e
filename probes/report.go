package probes

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
)

// Feature is one kernel feature ngxprobe uses, and whether this kernel
// has it.
type Feature struct {
	Name string
	// Since is the first Linux version that has it, as a reader's guide;
	// ngxprobe decides by probing, never by the version.
	Since string
	// For says what needs it; Required features stop ngxprobe without
	// them, the others degrade what For names.
	For      string
	Required bool
	Have     bool
	// Detail says why not, or what is used instead.
	Detail string
}

// Report probes the kernel for every feature ngxprobe uses, as bpftool
// feature probe or bpftrace --info do. It needs the privileges to load
// programs.
func Report() []Feature {
	_ = rlimit.RemoveMemlock() // as CheckSupport: probes create maps
	have := func(err error) (bool, string) {
		if err == nil {
			return true, ""
		}
		return false, err.Error()
	}
	var out []Feature
	add := func(f Feature, err error) {
		f.Have, f.Detail = have(err)
		out = append(out, f)
	}
	for _, c := range requiredChecks {
		err := c.test()
		if err != nil && strings.HasPrefix(c.name, "bpf_") && lockdown() == "confidentiality" {
			// Lockdown takes helpers away; the probe only sees them missing.
			err = fmt.Errorf("refused: the kernel is locked down (lockdown=confidentiality, %s)", lockdownFile)
		}
		add(Feature{Name: c.name, Since: c.since, For: c.report, Required: true}, err)
	}
	_, btfErr := btf.LoadKernelSpec()
	add(Feature{Name: "kernel BTF", Since: "5.4", For: "following a master's workers; stacks through uretprobes (CONFIG_DEBUG_INFO_BTF)"}, btfErr)
	add(Feature{Name: "bpf_probe_read_kernel", Since: "5.5", For: "following a master's workers; stacks through uretprobes"}, readKernelRefused())
	if btfErr == nil {
		realParent, tgid, err := taskOffsets()
		add(Feature{Name: "task_struct real_parent and tgid in BTF", For: "following a master's workers"}, err)
		if err == nil {
			add(Feature{Name: "bpf_get_current_task_btf loads", Since: "5.11", For: "the workers check in a few ns, not two bpf_probe_read_kernel per hit"}, haveTaskBTF(realParent, tgid))
		}
		r := loadReturnOffsets()
		var rerr error
		if !r.ok {
			rerr = errors.New("task_struct.utask, uprobe_task.return_instances or return_instance.{stack,orig_ret_vaddr,next} missing from BTF")
		}
		add(Feature{Name: "uretprobe return instances in BTF", For: "stacks through pending uretprobes"}, rerr)
	}
	f := Feature{Name: "uprobe_multi links", Since: "6.6", For: "watch: one link for every write site"}
	f.Have = features.HaveBPFLinkUprobeMulti() == nil
	if !f.Have {
		f.Detail = "watch uses " + ChooseWatchAttach().String()
	}
	out = append(out, f)
	add(Feature{Name: "BPF cookie for uprobes", Since: "5.15", For: "watch without uprobe_multi: one program for every site"}, features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie))
	return out
}

// lockdownFile says whether the kernel is locked down (securityfs).
const lockdownFile = "/sys/kernel/security/lockdown"

// lockdown is the kernel's lockdown mode ("none", "integrity",
// "confidentiality"), or "" when it cannot be read.
func lockdown() string {
	data, err := os.ReadFile(lockdownFile)
	if err != nil {
		return ""
	}
	// "none integrity [confidentiality]": the mode in force is bracketed.
	s := string(data)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return ""
}

// readKernelRefused explains why BPF programs may not read kernel memory,
// or returns nil when they may. Lockdown in confidentiality mode refuses
// bpf_probe_read_kernel.
func readKernelRefused() error {
	err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadKernel)
	if err == nil {
		return nil
	}
	if mode := lockdown(); mode == "confidentiality" {
		return missingFeature(err, "the kernel is locked down (lockdown=confidentiality, %s): BPF programs may not read kernel memory", lockdownFile)
	}
	return missingFeature(err, "bpf_probe_read_kernel is unavailable: %v", err)
}

// String is one line of a report.
func (f Feature) String() string {
	state := "yes"
	if !f.Have {
		state = "no"
		if f.Required {
			state = "MISSING"
		}
	}
	line := fmt.Sprintf("%-42s %-7s (%s)", f.Name, state, f.For)
	if f.Since != "" {
		line = fmt.Sprintf("%-42s %-7s Linux %-5s (%s)", f.Name, state, f.Since, f.For)
	}
	if f.Detail != "" {
		line += ": " + f.Detail
	}
	return line
}
