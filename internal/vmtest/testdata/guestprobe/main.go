// Command guestprobe is what vmtest's test runs in each guest: it prints
// the kernel release (uname(2)), whether bpf(2) loads a trivial socket
// filter, whether the kernel's BTF parses, and whether a uprobe on one of
// its own functions (on the guest's overlay root, over virtiofs: where
// nginx's binary will be) counts calls, one "key=value" a line, and exits 1
// when something fails.
package main

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func main() {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		fmt.Printf("release=error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("release=%s\n", unix.ByteSliceToString(u.Release[:]))
	failed := false
	check := func(key string, err error) {
		if err != nil {
			fmt.Printf("%s=error %v\n", key, err)
			failed = true
			return
		}
		fmt.Printf("%s=ok\n", key)
	}
	check("bpf", socketFilter())
	check("btf", kernelBTF())
	check("uprobe", uprobe())
	if failed {
		os.Exit(1)
	}
}

func socketFilter() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return err
	}
	return prog.Close()
}

func kernelBTF() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return err
	}
	_, err = spec.AnyTypeByName("task_struct")
	return err
}

//go:noinline
func target(n int) int { return n * 3 }

// uprobe counts calls of target with a uprobe on this executable.
func uprobe() error {
	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return err
	}
	defer counts.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.Kprobe,
		License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, counts.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ex, err := link.OpenExecutable(self)
	if err != nil {
		return err
	}
	l, err := ex.Uprobe("main.target", prog, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	sum := 0
	for i := range 5 {
		sum += target(i)
	}
	var n uint64
	if err := counts.Lookup(uint32(0), &n); err != nil {
		return err
	}
	if n != 5 {
		return fmt.Errorf("the uprobe counted %d calls, want 5 (sum %d)", n, sum)
	}
	return nil
}
