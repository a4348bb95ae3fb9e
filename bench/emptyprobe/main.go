// Command emptyprobe attaches a uprobe whose program does nothing, the
// floor against which ngxprobe's probes are measured: what remains is the
// kernel's own trap cost.
//
//	emptyprobe BINARY SYMBOL[%return]...   (detaches on SIGINT or SIGTERM)
//
// Several symbols give the floor of a probe set's points: SYMBOL%return
// adds a uretprobe.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "emptyprobe: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: emptyprobe BINARY SYMBOL[%%return]...")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Kprobe,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	ex, err := link.OpenExecutable(args[0])
	if err != nil {
		return err
	}
	for _, sym := range args[1:] {
		attach := ex.Uprobe
		if name, ok := strings.CutSuffix(sym, "%return"); ok {
			sym, attach = name, ex.Uretprobe
		}
		l, err := attach(sym, prog, nil)
		if err != nil {
			return err
		}
		defer l.Close()
	}
	fmt.Fprintln(os.Stderr, "emptyprobe: attached")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}
