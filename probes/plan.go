package probes

import (
	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Probe is one attach point: a function instance at entry or return, and
// the values to read there.
type Probe struct {
	Name     string // as the user wrote it, e.g. ngx_unix_recv or ngx_unix_recv%return
	Function *symbols.Function
	Return   bool
	Values   []*symbols.Plan
	// Stack captures registers and the user stack for unwinding, and,
	// with Options.Lua, the Lua frames.
	Stack bool
	// Lua are values of the Lua walk printed with Values (Options.Lua).
	Lua []LuaValue
	// LuaState, when set, is the function's lua_State argument: the Lua
	// walk starts there, even from a coroutine that is suspended (a
	// cosocket call waiting to be resumed), instead of from the VM's
	// running lua_State. Its plan must read a pointer value.
	LuaState *symbols.Plan
	// LuaChunk keeps, after the Lua walk, only the hits whose Lua stack
	// matches every one (Options.Lua); Filter is tested first.
	LuaChunk []LuaChunkMatch
	// At is the probe's offset from the function's entry (FUNCTION+OFF
	// and FILE:LINE probes); return probes are at 0.
	At uint64
	// Filter, when set, decides in the kernel which hits count further.
	Filter Cond
	// Aggregates are updated on every hit that passes the filter.
	Aggregates []AggregateUpdate
	// NoEvent: the probe only aggregates; it writes no event.
	NoEvent bool
	// Watch, when set, makes this probe a field watch: it attaches to the
	// watch's write sites, not to Function; its values may use the pseudo
	// registers (RegObject, RegSite, RegOld, RegNew).
	Watch *Watch
	// Diff, when set, reports changes of a field between probe points.
	Diff *Diff
	// Inlined names the inlined copy the probe is at ("f inlined into g
	// at file.c:12"), when it probes one at its entry (Function is g,
	// At the copy's offset in it).
	Inlined string
	// Notes are what the user should know of this attach point: the
	// values that cannot be read there, and why.
	Notes []string
}

// Options configure Attach.
type Options struct {
	// PID restricts events to one process; with Children, to its children
	// too (an nginx master and its workers, across reloads). 0: every
	// process running the binary.
	PID      int
	Children bool
	// RingBufferBytes is the event buffer size, a power of two pages.
	RingBufferBytes int
	// StackBytes is how much stack a probe with Stack copies; 8 KiB when 0.
	StackBytes int
	// WatchAttach forces how a watch reaches its write sites, to compare
	// the ways; WatchAuto takes the best the kernel has.
	WatchAttach WatchAttach
	// Lua, when set, makes every probe with Stack walk the running Lua
	// stack too (Event.Lua).
	Lua *lua.Layout
}

// DefaultStackBytes is the stack copy of a probe with Stack.
const DefaultStackBytes = 8 << 10

// planned is a program with the function it attaches to.
type planned struct {
	program
	function *symbols.Function
	at       uint64
}

// plan turns probes into programs: one per probe, plus an entry program
// that saves arguments for each return probe whose function has no entry
// probe of its own.
func plan(probes []*Probe, filter processFilter, wakeupBytes uint32, stackBytes int, lj *lua.Layout) []planned {
	// Per function (by entry address): its id in the saved-roots key, and
	// the roots its return probes need saved at entry.
	ids := map[functionKey]uint64{}
	roots := map[functionKey][]rootKey{}
	for _, p := range probes {
		addr := keyOf(p.Function)
		if _, ok := ids[addr]; !ok {
			ids[addr] = uint64(len(ids) + 1)
		}
		if !p.Return {
			continue
		}
		for _, v := range p.plans() {
			if !savedRoot(v) {
				continue
			}
			r := rootKey{v.Root.Reg, v.Root.Add}
			if indexOf(roots[addr], r) < 0 {
				roots[addr] = append(roots[addr], r)
			}
		}
	}
	var out []planned
	saving := map[functionKey]bool{} // functions whose entry program saves roots
	for id, p := range probes {
		addr := keyOf(p.Function)
		l := newLayout(p.Values)
		switch {
		case lj == nil:
		case p.Stack:
			l = l.withLua(lj)
		case len(p.Lua) > 0 || len(p.LuaChunk) > 0:
			short := *lj
			short.MaxFrames = min(lj.MaxFrames, whereFrames)
			l = l.withLua(&short)
		}
		if p.Stack {
			l = l.withStack(stackBytes)
		}
		pr := planned{function: p.Function, at: p.At, program: program{
			probeID: uint32(id), emit: !p.NoEvent, layout: l,
			isReturn: p.Return, functionID: ids[addr], filter: filter, wakeupBytes: int(wakeupBytes),
			where: p.Filter, aggregates: p.Aggregates, luaChunk: p.LuaChunk, luaState: p.LuaState,
		}}
		if p.Return {
			if readsSaved(p) {
				// Only the programs that read saved roots look them up;
				// none consumes them (see savedKeySize).
				pr.savedRoots = roots[addr]
			}
		} else if !saving[addr] && p.atEntry() {
			pr.saveRoots = roots[addr]
			saving[addr] = true
		}
		out = append(out, pr)
	}
	// Saving-only programs count their hits past the probes' slots.
	nextID := uint32(len(probes))
	for _, p := range probes {
		addr := keyOf(p.Function)
		if saving[addr] || len(roots[addr]) == 0 {
			continue
		}
		saving[addr] = true
		out = append(out, planned{function: p.Function, program: program{
			probeID: nextID, functionID: ids[addr], saveRoots: roots[addr], filter: filter,
		}})
		nextID++
	}
	return out
}

// functionKey identifies a function instance across the modules of an
// image: two modules can have code at the same address.
type functionKey struct {
	bin  *symbols.Binary
	addr uint64
}

func keyOf(fn *symbols.Function) functionKey { return functionKey{fn.Binary(), fn.Address} }

// atEntry: the probe runs at its function's entry, where the registers
// hold the arguments and sp the return address a return probe's key
// needs (see savedKeySize); a probe inside the body, at an inlined copy
// or at a watch's write sites cannot save them.
func (p *Probe) atEntry() bool {
	return !p.Return && p.At == 0 && p.Inlined == "" && p.Watch == nil && p.Diff == nil
}

// plans lists every plan the probe evaluates: values, filter operands,
// the diff's key and field, and aggregation keys and values.
func (p *Probe) plans() []*symbols.Plan {
	out := condPlans(p.Filter, true, append([]*symbols.Plan(nil), p.Values...))
	if p.LuaState != nil {
		out = append(out, p.LuaState)
	}
	if p.Diff != nil {
		out = append(out, p.Diff.Key, p.Diff.Value)
	}
	for _, u := range p.Aggregates {
		out = append(out, u.Keys...)
		if u.Value != nil && u.Value.Plan != nil {
			out = append(out, u.Value.Plan)
		}
	}
	return out
}

// readsSaved reports whether a return probe reads an argument saved at
// entry (not only $retval or constants).
// savedRoot: the plan starts from an entry argument, which a return probe
// reads from what its entry saved (not $retval, a constant, a pseudo
// register or a value located nowhere).
func savedRoot(v *symbols.Plan) bool {
	return !v.Root.Const && !v.Root.Return && v.Root.Reg < RegObject && v.Root.Unavailable == ""
}

// condPlans appends the plans a condition reads to out: its comparisons'
// operands, and with strings the strings compared with literals.
func condPlans(c Cond, strings bool, out []*symbols.Plan) []*symbols.Plan {
	switch c := c.(type) {
	case And:
		return condPlans(c.R, strings, condPlans(c.L, strings, out))
	case Or:
		return condPlans(c.R, strings, condPlans(c.L, strings, out))
	case Not:
		return condPlans(c.X, strings, out)
	case Compare:
		for _, o := range []Operand{c.L, c.R} {
			if o.Plan != nil {
				out = append(out, o.Plan)
			}
		}
	case StringEquals:
		if strings {
			out = append(out, c.Plan)
		}
	}
	return out
}

func readsSaved(p *Probe) bool {
	for _, v := range p.plans() {
		if savedRoot(v) {
			return true
		}
	}
	return false
}
