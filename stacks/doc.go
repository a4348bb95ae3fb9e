// Package stacks unwinds and symbolizes user stacks captured by a probe:
// the registers at the probe and a copy of the stack from sp upward.
//
// Release builds of nginx have no frame pointers, so a frame-pointer walk
// (bpf_get_stack, bpftrace's ustack) stops after a frame or two. Unwinding
// here follows the call frame information (.eh_frame, .debug_frame) of
// each module, falls back to frame pointers only where a module has none,
// and stops, marked truncated, where the copied bytes end.
//
// Modules are found through /proc/PID/maps and indexed once per build-id:
// symbols, CFI, the DWARF line table and inline chains (the last two
// read through package symbols).
package stacks
