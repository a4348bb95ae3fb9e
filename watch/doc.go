// Package watch finds, statically, every instruction of an x86-64 nginx
// binary that can write a watched field, such as the eof bit of
// ngx_event_t, so that a tracer can put uprobes on those instructions only
// and report where and when the field flips. It also gives what a BPF
// program needs to work out, at such an instruction, the field's new value.
//
// The package is the static analysis only: it reads a binary (through
// package symbols) and decodes its code, and attaches nothing. Package
// flips (watch/flips) turns a watch into probes and decodes their events
// into flips.
//
// # Finding the field
//
// ResolveField reads the field's place from DWARF: the byte holding its
// lowest bit, the bit within that byte and its width (ngx_event_t.eof: byte
// 9, bit 0, 1 bit, in nginx 1.22 on x86-64). It also lists Bases, the
// places other than the object's start that a base register may point to
// when the field is written: aggregate members of the struct (code that
// gets an event back from its timer rbtree node writes ev->timedout as
// -0x1f(%rbx), rbx pointing at ev->timer) and structs that embed the
// struct by value (ngx_thread_task_t embeds an ngx_event_t at 32).
//
// # Scanning
//
// Scan decodes every function symbol's range (cold parts, clones such as
// .isra/.constprop/.part and LTO-private copies included; all executable
// sections when there are no symbols) with golang.org/x/arch/x86/x86asm.
// A candidate is an instruction whose memory destination, base-register
// relative, covers one of the field's bytes for one of the bases:
// disp+base ≤ byte < disp+base+size. Byte, word, dword, qword and 16-byte
// writes all count, so movw/movl/movq stores over the field's storage unit
// and movups copies are found. Not candidates:
//
//   - loads, cmp, test, bt, push, prefetch and other reads of memory;
//   - rsp-based operands (stack slots; rbp is a general register here,
//     nginx is built without frame pointers, so rbp-based writes count);
//   - rip-relative writes, unless they land on the field of a global
//     variable (or array) of the watched type, found through ELF object
//     symbols and DWARF variables (ngx_cleaner_event.timer_set = 1). Those
//     sites have Global set and no base register;
//   - fs/gs-relative and absolute addresses.
//
// Each candidate becomes a Site with its Kind:
//
//	SetBits      or $imm / or %reg      (orb $0x1,0x9(%rbx): eof = 1)
//	ClearBits    and $imm / and %reg    (andb $0xfe,0x9(%rax): eof = 0)
//	ToggleBits   xor $imm / xor %reg / not
//	BitTestSet, BitTestReset, BitTestComplement   bts/btr/btc $n
//	Store        mov (imm, general register, or a zeroed xmm), xchg
//	Unknown      anything else that writes the bytes: add/sub/inc, shifts,
//	             cmpxchg, setcc, bts with a register bit index, stores from
//	             vector registers (struct copies), movbe, ...
//	NoEffect     or/and/bt* whose immediate misses the field, and
//	             read-modify-write stores that put the field back as loaded;
//	             dropped unless Options.KeepNoEffect.
//
// Unknown sites are always reported, never dropped; Reason says why.
//
// # Read-modify-write sequences
//
// GCC merges adjacent bitfield assignments into one load, and/or of
// masks, and one store (rev->ready = 0; rev->eof = 1; becomes movzwl
// 0x8(%r14),%eax; and $0xfedf,%ax; or $0x1,%ah; mov %ax,0x8(%r14)). A small
// forward analysis over straight-line code (flow.go) tracks, bit by bit,
// which register bits are constants and which are copies of loaded bits.
// At a store it turns what it knows into a static Effect: the store above
// sets eof to 1 and needs no register at run time (LoadAddr names the load,
// Lines every source line from load to store: the line table gives the
// merged store the first statement's line). A store that only writes the
// field back as loaded is NoEffect for that field. The state is reset at
// direct branch targets, after jumps, calls and returns, and by
// instructions it does not model; a store to memory that may overlap a
// loaded unit forgets the loaded bits. Case labels reached only through a
// jump table are not known branch targets: a case entered both by falling
// through from the previous case and through the table could be analysed
// with the fall-through path's register values. GCC rarely makes such a
// label the middle of a bitfield read-modify-write.
//
// # Type hints
//
// A displacement cannot tell ev->eof from some other struct's byte 9 (a
// qword store to 0x8(%rax) is a candidate for every struct with a pointer
// at 8). After the scan, the DWARF variables in scope at each site whose
// location is the base register are judged (TypeHint): HintMatch when one
// points where the site assumes (an ngx_event_t *, or an
// ngx_rbtree_node_t * for the timer base), HintMismatch when all point to
// other structs, HintOpaque for void * and the like, HintNone when no
// variable is known to be there, as is common for real sites (c->read is
// a temporary). Options.DropMismatch drops HintMismatch sites: much fewer
// uprobes, at the risk of DWARF describing a register wrongly.
//
// # Evaluating a site at run time
//
// A uprobe fires before the instruction runs. The object written is at
// ObjectAddress(base, index, bias): Base+Index*Scale-BaseAt (the load bias
// plus GlobalAddr for globals). A watcher that knows which objects it
// watches looks that address up; one that watches every object of the
// type has to take the site's reading on trust (or keep only HintMatch
// sites). The old value is read from memory at the object plus
// Field.Offset; the new value is Site.Apply(old, reg) where reg is
// regs[SrcReg] when SrcReg is set, or Effect's masks for a BPF program
// (see Effect). Unknown sites, and any site whose effect should be
// double-checked, use a pair of probes instead: at the site record the
// object's address (per thread), at Address+Len read the field again; the
// instruction does not branch, so the next instruction always follows it.
//
// # Not found
//
// Writes the instructions do not show: string instructions (rep stos,
// rep movs: their destination is %rdi, which may be any object; counted in
// Stats.StringOps), calls to memset/memcpy/memzero and other functions
// that write through a pointer they were given (their stores are base+disp
// writes found only if the displacement fits, usually not), writes to
// objects on the stack (rsp-based), writes through a base register that
// points elsewhere inside the object than Bases says, and writes by the
// kernel or by other processes to shared memory.
package watch
