// Package probes generates BPF programs at run time, with cilium/ebpf's asm
// package, from the plans that package symbols compiles, and attaches them
// as uprobes and uretprobes.
//
// Each program reads its values with bpf_probe_read_user into a ring-buffer
// record; a faulting read marks its value unreadable and never ends the
// event. Return probes read arguments that their entry program saved per
// thread, because argument registers are clobbered by the time a function
// returns.
//
// A probe at a function's return is a return probe (Probe.Return); the
// kernel attaches it as a uretprobe, whose trampoline replaces the return
// address on the stack. Those replaced addresses are a stack capture's
// returns (stacks.Capture.Returns).
//
// The package's files, in the order a session goes through them:
//
//   - plan.go: Probe and Options, and the programs planned for them.
//   - codegen.go, filter.go, aggregate.go, watch.go, diff.go: the
//     instructions of a program, and the maps of aggregations, watches
//     and diffs.
//   - layout.go: the record a program writes, and its decoding.
//   - load.go: loading programs; a rejected one is bisected to the value
//     the verifier refuses (VerifierError).
//   - attach.go: Session, Attach and its maps and links, Detach and Close.
//   - reader.go: reading events from the ring (Read, ReadRecord, Decode,
//     SetDeadline, Flush) and the hit and lost counters.
//   - features.go: what the kernel and the process must provide.
package probes
