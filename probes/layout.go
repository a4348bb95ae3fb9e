package probes

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Event header, as written by the BPF program at the start of a record.
const (
	hdrProbeID = 0  // u32
	hdrPidTgid = 8  // u64
	hdrTime    = 16 // u64, CLOCK_MONOTONIC ns
	headerSize = 24
)

// Each value slot starts with a small header, then its data.
const (
	slotStatus = 0 // u8: statusOK, statusFault, statusNoEntry or statusUnavailable
	slotStep   = 1 // u8: which read failed (0 = first pointer load)
	slotLen    = 4 // u32: bytes of data
	slotHeader = 8
)

const (
	statusOK      = 0
	statusFault   = 1 // a pointer was NULL or unmapped
	statusNoEntry = 2 // a return probe saw no matching entry
	// statusUnavailable: the plan's root cannot be located where the
	// probe is (symbols.Root.Unavailable); nothing was read.
	statusUnavailable = 3
)

// maxEventSize keeps every offset in the record within the 16-bit
// offsets of BPF load and store instructions.
const maxEventSize = 16 << 10

// maxStackBytes bounds the stack copy; it is addressed through registers,
// not instruction offsets, so it is not bound by maxEventSize.
const maxStackBytes = 64 << 10

// valueSlot locates one value in the event record.
type valueSlot struct {
	plan   *symbols.Plan
	offset int // of the slot header
	data   int // capacity of the data area
	// How decode formats the value, chosen once by newLayout (see
	// slotFormat).
	format slotFormat
	// size is, for integer formats, the bytes of the value that count
	// (Plan.Format's size).
	size int
	// faults is the reason of a fault at each pointer load, then at the
	// final read.
	faults []string
	// memo is the last value formatted, shared by the copies of the
	// slot.
	memo *memo
}

// layout places the values of one probe in its event record, and after
// them, when the probe captures stacks, the registers and the stack copy.
type layout struct {
	slots []valueSlot
	size  int
	// stack is the offset of the stack section, 0 when there is none.
	stack      int
	stackBytes int
	// luaAt is the offset of the Lua section, walked with lua, when lua
	// is set.
	luaAt int
	lua   *lua.Layout
}

// The stack section: the registers the unwinder starts from (by DWARF
// number: rip, which is also the return-address column stacks.RegRA, rsp,
// rbp, rbx, r12-r15), the number of bytes copied, then the copy of the
// stack from sp upward.
var stackRegs = []int{symbols.RegRIP, symbols.RegRSP, symbols.RegRBP, symbols.RegRBX, symbols.RegR12, symbols.RegR13, symbols.RegR14, symbols.RegR15}

// The unwinder reads pc at stacks.RegRA: it must be rip's number (a
// negative constant converted to uint fails to compile).
const _ = uint(symbols.RegRIP-stacks.RegRA) + uint(stacks.RegRA-symbols.RegRIP)

// Then the return addresses pending uretprobes replaced with their
// trampoline: a count and up to maxReturns {stack slot, original} pairs.
const (
	stackLenOff  = 8 * 8 // u32 after the registers
	returnsOff   = stackLenOff + 8
	maxReturns   = 4
	stackDataOff = returnsOff + 8 + 16*maxReturns
	// stackChunk is the unit of the fallback copy near the top of the stack.
	stackChunk = 512
)

// withLua adds a Lua section for the walk of lj. It goes before the
// stack section, whose size would put it past 16-bit offsets.
func (l layout) withLua(lj *lua.Layout) layout {
	l.luaAt = l.size
	l.lua = lj
	l.size += lj.Size()
	return l
}

// decodeLua returns the Lua frames the probe copied, or nil.
func (l layout) decodeLua(rec []byte) *lua.Stack {
	if l.lua == nil || len(rec) < l.luaAt+l.lua.Size() {
		return nil
	}
	st := l.lua.Decode(rec[l.luaAt : l.luaAt+l.lua.Size()])
	return &st
}

// withStack adds a stack section of n bytes (a multiple of stackChunk).
func (l layout) withStack(n int) layout {
	l.stack = l.size
	l.stackBytes = n
	l.size += stackDataOff + n
	return l
}

func (l layout) check() error {
	if l.stackBytes%stackChunk != 0 || l.stackBytes < 0 || l.stackBytes > maxStackBytes {
		return fmt.Errorf("stack copy of %d bytes: want a multiple of %d up to %d", l.stackBytes, stackChunk, maxStackBytes)
	}
	if l.size-l.stackBytes > maxEventSize {
		return fmt.Errorf("the values of one probe need %d bytes per event, more than the %d a BPF program can address; split them across probes", l.size, maxEventSize)
	}
	return nil
}

func newLayout(plans []*symbols.Plan) layout {
	l := layout{size: headerSize}
	for _, p := range plans {
		n := dataSize(p.Read)
		l.slots = append(l.slots, newSlot(p, l.size, n))
		l.size += slotHeader + n
	}
	return l
}

// dataSize is the data area a read needs; at least 8 bytes, because
// pointer loads go through the first 8 bytes of the area, and a multiple
// of 8 to keep the next slot aligned.
func dataSize(r symbols.Read) int {
	n := 8
	switch r.Kind {
	case symbols.ReadMemory:
		n = r.Size
	case symbols.ReadCString:
		n = r.Cap
	case symbols.ReadNgxStr:
		n = 16 + r.Cap
	}
	return max(8, (n+7)&^7)
}

// Value is one expression's result in an event.
type Value struct {
	Expr     string
	Readable bool
	// Why is set when the value is not readable.
	Why  string
	Raw  []byte
	Text string
	JSON any
}

// The texts of values that were not read.
const (
	textUnreadable  = "<unreadable>"
	textUnavailable = "<unavailable>"
	textUnknown     = "<unknown>"
	whyNoEntry      = "no entry event for this return (attached mid-call)"
)

// decode turns a record into its values.
func (l layout) decode(rec []byte) ([]Value, error) {
	return l.decodeInto(rec, nil)
}

// decodeInto is decode with the values, and their raw bytes, in buf's
// memory when it has the room. It runs for every event, so what depends
// on the plan alone was decided by newLayout, and the raw bytes of all
// the values share one allocation. The values do not refer to rec, which
// the caller may reuse.
func (l layout) decodeInto(rec []byte, buf *DecodeBuffer) ([]Value, error) {
	if len(rec) < l.size {
		return nil, fmt.Errorf("event of %d bytes, want %d", len(rec), l.size)
	}
	var out []Value
	if buf != nil && cap(buf.values) >= len(l.slots) {
		out = buf.values[:len(l.slots)]
	} else {
		out = make([]Value, len(l.slots))
	}
	total := 0
	for i := range l.slots {
		s := &l.slots[i]
		if h := rec[s.offset:]; h[slotStatus] == statusOK {
			total += s.rawLen(h)
		}
	}
	var arena []byte
	switch {
	case total == 0:
	case buf != nil && cap(buf.raw) >= total:
		arena = buf.raw[:0]
	default:
		arena = make([]byte, 0, total)
	}
	for i := range l.slots {
		s := &l.slots[i]
		// Field by field: a reused value is on the heap, where storing
		// a whole struct costs a bulk write barrier while the GC runs.
		v := &out[i]
		v.Expr = s.plan.Expr
		v.Readable, v.Raw, v.JSON = false, nil, nil
		h := rec[s.offset:]
		switch h[slotStatus] {
		case statusOK:
			v.Readable, v.Why = true, ""
			arena = s.decodeOK(v, h, arena)
		case statusFault:
			v.Why = s.faults[min(int(h[slotStep]), len(s.faults)-1)]
			v.Text = textUnreadable
		case statusUnavailable:
			v.Why = s.plan.Root.Unavailable
			v.Text = textUnavailable
		default:
			v.Why = whyNoEntry
			v.Text = textUnknown
		}
	}
	if buf != nil {
		buf.values = out[:cap(out)]
		if cap(arena) > cap(buf.raw) {
			buf.raw = arena[:0]
		}
	}
	return out, nil
}

// decodeStack returns the registers and stack bytes the probe copied.
func (l layout) decodeStack(rec []byte, pid int) *stacks.Capture {
	if l.stackBytes == 0 || len(rec) < l.size {
		return nil
	}
	sec := rec[l.stack:]
	c := &stacks.Capture{PID: pid, Regs: map[uint64]uint64{}, Requested: l.stackBytes}
	for i, r := range stackRegs {
		c.Regs[uint64(r)] = binary.LittleEndian.Uint64(sec[8*i:])
	}
	n := min(int(binary.LittleEndian.Uint32(sec[stackLenOff:])), l.stackBytes)
	c.Stack = append([]byte(nil), sec[stackDataOff:stackDataOff+n]...)
	for i := range min(int(binary.LittleEndian.Uint32(sec[returnsOff:])), maxReturns) {
		pair := sec[returnsOff+8+16*i:]
		if c.Returns == nil {
			c.Returns = map[uint64]uint64{}
		}
		c.Returns[binary.LittleEndian.Uint64(pair)] = binary.LittleEndian.Uint64(pair[8:])
	}
	return c
}

// faultReasons are the reasons of a fault at each of p's pointer loads,
// then at its final read.
func faultReasons(p *symbols.Plan) []string {
	out := make([]string, len(p.Loads)+1)
	for step := range p.Loads {
		out[step] = "pointer load " + strconv.Itoa(step+1) + " of " + strconv.Itoa(len(p.Loads)) + " faulted (NULL or unmapped)"
	}
	out[len(p.Loads)] = "final read faulted (NULL or unmapped)"
	return out
}
