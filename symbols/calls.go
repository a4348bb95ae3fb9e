package symbols

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// CallSite is a direct call or tail jump from one function instance to
// another: a probe at At (FUNCTION+Offset) runs just before the callee,
// with the caller's parameters in scope and the callee's arguments set.
type CallSite struct {
	Caller *Function
	Offset uint64 // of the call or jump instruction, from Caller.Address
	At     uint64 // its address
	Tail   bool   // a jump: the caller does not get control back
}

// Point is the call site as a probe point, FUNCTION+OFFSET.
func (c CallSite) Point() string { return fmt.Sprintf("%s+%#x", c.Caller.Symbol, c.Offset) }

// maxCallerBytes bounds the code decoded for call sites.
const maxCallerBytes = 1 << 20

// CallsTo returns caller's direct calls and tail jumps (rel8 or rel32)
// whose target is the entry of one of callees, in address order. It
// decodes the caller's code from its entry: GCC puts no data in x86-64
// code, so every instruction boundary is found. A part GCC split off
// (caller.cold) is a function of its own; an indirect call is not seen.
//
// Call sites in DWARF (DW_TAG_call_site) would name the same places, but
// GCC merges several calls that end a function into one shared tail
// jump, which DWARF then gives no argument for; decoding finds it as it
// finds the rest, and needs no debug information.
func CallsTo(caller *Function, callees []*Function) ([]CallSite, error) {
	if caller.bin == nil {
		return nil, fmt.Errorf("%s: not found by lookup: no code to decode", caller.Symbol)
	}
	if caller.Size == 0 || caller.Size > maxCallerBytes {
		return nil, fmt.Errorf("%s: %d bytes of code: cannot decode its calls", caller.Symbol, caller.Size)
	}
	code, err := caller.bin.Code(caller.Address, int(caller.Size))
	if err != nil {
		return nil, err
	}
	targets := map[uint64]bool{}
	for _, fn := range callees {
		if fn.bin == caller.bin {
			targets[fn.Address] = true
		}
	}
	var out []CallSite
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s+%#x: cannot decode: %v", caller.Symbol, pc, err)
		}
		next := caller.Address + uint64(pc+inst.Len)
		if rel, ok := inst.Args[0].(x86asm.Rel); ok && (inst.Op == x86asm.CALL || inst.Op == x86asm.JMP) {
			if targets[next+uint64(int64(rel))] {
				out = append(out, CallSite{Caller: caller, Offset: uint64(pc), At: caller.Address + uint64(pc), Tail: inst.Op == x86asm.JMP})
			}
		}
		pc += inst.Len
	}
	return out, nil
}
