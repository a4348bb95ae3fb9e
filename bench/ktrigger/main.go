// Command ktrigger attaches a kernel-side trigger with no uprobe: a BPF
// program on the raw tracepoint sys_exit (every syscall's return, in
// every process) that keeps only the given process (by tgid) and counts
// the reads that returned 0 (EOF) or -ECONNRESET, which is what a
// kernel-side "closes" would start from. It is the benchmark's measure
// of a kernel trigger against the uprobes closes uses for the same
// question. Raw tracepoints need no tracefs.
//
//	ktrigger TGID   (detaches on SIGINT or SIGTERM, printing its counts)
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "ktrigger: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: ktrigger TGID")
	}
	tgid, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		return err
	}
	defer counts.Close()
	// sys_exit(struct pt_regs *regs, long ret): a raw tracepoint's context
	// is its arguments, u64 each. Slot 0 counts the process's syscalls,
	// slot 1 those that returned 0 or -ECONNRESET (EOF, reset).
	count := func(slot int32) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.RFP, -4, int64(slot), asm.Word),
			asm.LoadMapPtr(asm.R1, counts.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, fmt.Sprintf("skip%d", slot)),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("skip%d", slot)),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.JNE.Imm(asm.R0, int32(tgid), "out"),
	}
	insns = append(insns, count(0)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord), // ret
		asm.JEq.Imm(asm.R1, 0, "hit"),
		asm.JEq.Imm(asm.R1, -int32(syscall.ECONNRESET), "hit"),
		asm.Ja.Label("out"),
	)
	hit := count(1)
	hit[0] = hit[0].WithSymbol("hit")
	insns = append(insns, hit...)
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: prog})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintln(os.Stderr, "ktrigger: attached")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	var total [2]uint64
	for slot := range 2 {
		var per []uint64
		if err := counts.Lookup(uint32(slot), &per); err == nil {
			for _, n := range per {
				total[slot] += n
			}
		}
	}
	fmt.Fprintf(os.Stderr, "ktrigger: %d syscalls of %d, %d returned 0 or -ECONNRESET\n", total[0], tgid, total[1])
	return nil
}
