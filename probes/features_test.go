package probes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// btfSpec builds a BTF spec of types, as a kernel's would be read.
func btfSpec(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// Errors keep their causes for errors.Is, and a missing kernel feature
// matches ebpf.ErrNotSupported as well as ErrMissingFeature.
func TestErrorsMatchCauses(t *testing.T) {
	notSupported := fmt.Errorf("map type RingBuf: %w", ebpf.ErrNotSupported)
	noPMU := &fs.PathError{Op: "stat", Path: "/sys/bus/event_source/devices/uprobe/type", Err: os.ErrNotExist}
	denied := &fs.PathError{Op: "open", Path: "/sys/kernel/btf/vmlinux", Err: os.ErrPermission}
	other := errors.New("something else")
	u32 := &btf.Int{Name: "u32", Size: 4}
	_, _, noTask := taskOffsetsIn(btfSpec(t, &btf.Struct{Name: "mm_struct", Size: 4, Members: []btf.Member{{Name: "x", Type: u32}}}))
	_, _, noTgid := taskOffsetsIn(btfSpec(t, &btf.Struct{Name: "task_struct", Size: 4, Members: []btf.Member{{Name: "pid", Type: u32}}}))

	cases := []struct {
		name  string
		err   error
		is    []error // errors.Is must hold
		isNot []error // and must not
	}{
		{"helper not supported", checkFailed("bpf_ringbuf_reserve", "writes events", notSupported),
			[]error{ErrMissingFeature, ebpf.ErrNotSupported}, []error{ErrPermission}},
		{"no uprobe PMU", checkFailed("uprobe PMU", "attaches uprobes", noPMU),
			[]error{ErrMissingFeature, ebpf.ErrNotSupported, os.ErrNotExist}, []error{ErrPermission}},
		{"permission", checkFailed("kernel BTF", "reads it", denied),
			[]error{ErrPermission, os.ErrPermission}, []error{ErrMissingFeature, ebpf.ErrNotSupported}},
		{"other failure", checkFailed("ring buffer", "carries events", other),
			[]error{other}, []error{ErrMissingFeature, ErrPermission, ebpf.ErrNotSupported}},
		{"no task_struct", noTask,
			[]error{ErrMissingFeature, ebpf.ErrNotSupported, btf.ErrNotFound}, nil},
		{"no tgid", noTgid,
			[]error{ErrMissingFeature, ebpf.ErrNotSupported}, nil},
		{"no kernel BTF", missingFeature(nil, "kernel BTF is needed: %w", notSupported),
			[]error{ErrMissingFeature, ebpf.ErrNotSupported}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.err == nil {
				t.Fatal("no error")
			}
			for _, target := range c.is {
				if !errors.Is(c.err, target) {
					t.Errorf("errors.Is(%q, %q) = false, want true", c.err, target)
				}
			}
			for _, target := range c.isNot {
				if errors.Is(c.err, target) {
					t.Errorf("errors.Is(%q, %q) = true, want false", c.err, target)
				}
			}
		})
	}
	// errors.As reaches the cause too, and the message still starts
	// with the sentinel's.
	err := checkFailed("uprobe PMU", "attaches uprobes", noPMU)
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != noPMU.Path {
		t.Errorf("errors.As(%q, *fs.PathError) does not find the stat error", err)
	}
	if want := "missing kernel feature: uprobe PMU is missing;"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q does not start with %q", err, want)
	}
}
