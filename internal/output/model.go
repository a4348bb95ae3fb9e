package output

import (
	"fmt"
	"time"
)

// Display changes how a value is shown.
type Display int

const (
	// Plain shows the value as decoded.
	Plain Display = iota
	// Role shows a connection's c->listening as client (set) or
	// upstream (NULL): nginx creates upstream connections without a
	// listening socket.
	Role
	// Connection shows a connection number as *N, as the error log does.
	Connection
)

// Pointer is an address read from the traced process. It prints as
// 0x..., as C's %p does.
type Pointer uint64

func (p Pointer) String() string { return fmt.Sprintf("%#x", uint64(p)) }

// Value is one value read at a hit.
type Value struct {
	// Name is how the value is labelled (rc, eof); Expr is the C
	// expression it was read from.
	Name, Expr string
	// Group is the output line the value belongs on ("client read");
	// sub-groups are named after their parent and a space.
	Group   string
	Display Display
	// Hidden values were read for a message only.
	Hidden bool
	// Readable is false when a pointer on the way faulted; Why says so.
	Readable bool
	Why      string
	// Data is the decoded value: int64, uint64, string or Pointer; for
	// Display Role it is the role's name.
	Data any
	// Text is the value as C would print it (strings quoted).
	Text string
}

// Origin says which nginx a hit came from when one trace follows many
// (--all-nginx): its master, and where that master runs.
type Origin struct {
	MasterPID int
	// Binary is the executable's path in the master's mount namespace.
	Binary        string
	ContainerID   string
	PodName       string
	PodNamespace  string
	ContainerName string
}

// Event is one probe hit.
type Event struct {
	// Origin is set with --all-nginx.
	Origin   *Origin
	Time     time.Time
	PID, TID uint32
	// Probe is the probe as the user wrote it; Function the symbol of
	// the instance that hit, and Clone whether it is a GCC or LTO copy.
	Probe, Function string
	Clone           bool
	Values          []Value
	// Messages are the probe's printf lines, formatted.
	Messages []string
	Stack    *Stack
}

// Frame is one frame of an unwound user stack.
type Frame struct {
	Module  string
	Address uint64 // module-relative (ELF virtual address)
	Symbol  string
	Offset  uint64 // from the symbol
	File    string
	Line    int
	Inlined bool
	// Lua is set for a frame of Lua code (OpenResty), placed where the
	// LuaJIT VM ran it; the fields above are then empty.
	Lua *LuaFrame
}

// LuaFrame is one Lua frame, as debug.traceback() names it.
type LuaFrame struct {
	// Kind is "lua", "main" (a main chunk), "C" (a C function Lua
	// called), "builtin" (a LuaJIT fast function) or "trace" (JIT-compiled
	// code, whose inlined frames are not known).
	Kind string
	// Source is debug.traceback()'s short_src: "auth.lua",
	// "access_by_lua(nginx.conf:14)".
	Source string
	// Line is the current line, 0 when not known; FirstLine is where the
	// function is defined.
	Line, FirstLine int
	// Text is the line debug.traceback() prints for the frame, or for a
	// trace what is known of it.
	Text string
}

// Stack is an unwound user stack.
type Stack struct {
	Frames    []Frame
	Truncated bool
	// Reason says why unwinding stopped early; Notes report modules
	// replaced on disk since they were mapped.
	Reason string
	Notes  []string
}

// Flip is a change of a watched field of a connection.
type Flip struct {
	// Origin is set with --all-nginx.
	Origin   *Origin
	Time     time.Time
	PID, TID uint32
	// Mode is exact (a write instruction was probed) or diff (the field
	// was compared between probe points).
	Mode     string
	Field    string
	Old, New uint64
	// Conn is the connection's number, Role client or upstream, and
	// LoggedAs the *N it is logged under (its client's, for an upstream).
	Conn     int64
	Role     string
	LoggedAs int64
	Client   string
	// Function, File and Line are the code that flipped the field; Site
	// is the write instruction (exact mode).
	Function string
	File     string
	Line     int
	Site     string
	// From and To are the probe points that saw the old and the new
	// value (diff mode).
	From, To string
	Stack    *Stack
}

// Aggregate is an @map printed at exit.
type Aggregate struct {
	Name string
	// Func is count, sum, min, max or avg.
	Func     string
	KeyNames []string
	Rows     []AggregateRow
}

// AggregateRow is one key's totals; which of them is the map's value
// depends on Func.
type AggregateRow struct {
	Keys                 []Key
	Count, Sum, Min, Max int64
}

// Key is one part of an aggregation key.
type Key struct {
	Readable bool
	Data     any
	Text     string
}

// Value is the row's result for an aggregation function.
func (r AggregateRow) Value(fn string) int64 {
	switch fn {
	case "sum":
		return r.Sum
	case "min":
		return r.Min
	case "max":
		return r.Max
	case "avg":
		if r.Count == 0 {
			return 0
		}
		return r.Sum / r.Count
	}
	return r.Count
}

// Summary is what a trace counted, per probe, printed when it ends.
type Summary struct {
	Probes []ProbeCount
}

// ProbeCount is one probe's hits, the events delivered and those lost.
type ProbeCount struct {
	Probe, Function    string
	Hits, Events, Lost uint64
}

// Totals adds up every probe's counts.
func (s Summary) Totals() (hits, events, lost uint64) {
	for _, p := range s.Probes {
		hits += p.Hits
		events += p.Events
		lost += p.Lost
	}
	return hits, events, lost
}
