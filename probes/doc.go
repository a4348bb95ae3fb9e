// Package probes generates BPF programs at run time, with cilium/ebpf's asm
// package, from the plans that package symbols compiles, and attaches them
// as uprobes and uretprobes.
//
// Each program reads its values with bpf_probe_read_user into a ring-buffer
// record; a faulting read marks its value unreadable and never ends the
// event. Return probes read arguments that their entry program saved per
// thread, because argument registers are clobbered by the time a function
// returns.
package probes
