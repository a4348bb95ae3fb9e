package probes

import (
	"fmt"
	"sort"

	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// A filter such as the default set's reads many fields through the same
// pointers (r->connection, then its read and write events), several bits
// of one byte (eof, error and timedout of an event), and fields a few
// bytes apart. Each bpf_probe_read_user costs about 0.1 µs on these VMs,
// far more than the bytes it copies, and a hit the filter drops pays for
// every one of them: it is the healthy request, the one that must cost
// almost nothing.
//
// hoistFilterReads therefore reads, once at the filter's start, every
// memory read the filter's comparisons share: pointer prefixes and final
// values alike, each read once however many comparisons use it, and reads
// from one base within spanWindow bytes of each other in a single copy.
// The pointers land in the prefix cache (operand then starts from the
// longest cached prefix), the values in value slots (operand takes them
// as they are). The reads happen on every path, before any branch, so a
// cached slot is valid wherever the filter reads it. A pointer whose read
// faults caches 0, and reading through 0 faults as the chain would have;
// a value whose read faults sets its group's bit in the fault mask, and a
// comparison that finds its bit set is false, as a faulting read is.

// maxValueGroups bounds the groups whose values the filter's start reads.
// The fault mask is a constant the verifier tracks exactly, so each such
// group doubles the paths it explores through the rest of the filter (a
// group read or faulted): 8 groups are 256 paths, well inside its
// budget; further values are read where they are compared, as before.
const maxValueGroups = 8

// cachedValue is where the filter's hoisted read left a value: its slot,
// zero-extended, and the fault-mask bit of the group it was read in.
type cachedValue struct {
	slot int16
	bit  int32
}

// filterRead is one distinct memory read of a filter: a pointer that a
// longer prefix starts from, or a comparison's final value.
type filterRead struct {
	base  string        // prefixKey of the pointer read through
	depth int           // how many loads the base took from the root
	plan  *symbols.Plan // a plan through this base, to compute it
	off   int64
	size  int
	child string // a pointer read: the prefix it produces; "" for a value
	uses  int
}

func (r *filterRead) key() string {
	if r.child != "" {
		return r.child
	}
	return valueKey(r.plan)
}

// valueKey identifies a plan's final memory read.
func valueKey(plan *symbols.Plan) string {
	return fmt.Sprintf("%s@%d:%d", prefixKey(plan.Root, plan.Loads), plan.Read.Offset, plan.Read.Size)
}

// filterPlans lists the located plans of a filter's numeric comparisons:
// a string compared with a literal is read where it is compared.
func filterPlans(c Cond) []*symbols.Plan {
	var out []*symbols.Plan
	for _, plan := range condPlans(c, false, nil) {
		if plan.Root.Unavailable == "" {
			out = append(out, plan)
		}
	}
	return out
}

// cacheablePrefixes is how many of a plan's loads may come from the
// cache: all of them when a read through the last pointer follows, all
// but the last when the value is the pointer itself (a cached 0 could
// not tell a NULL value from a fault).
func cacheablePrefixes(plan *symbols.Plan) int {
	if plan.Read.Kind == symbols.ReadMemory {
		return len(plan.Loads)
	}
	return len(plan.Loads) - 1
}

// cacheableValue: a final read the value slots can hold, one that a
// single aligned load of the span buffer takes.
func cacheableValue(plan *symbols.Plan) bool {
	if plan.Read.Kind != symbols.ReadMemory {
		return false
	}
	switch plan.Read.Size {
	case 1, 2, 4, 8:
		return true
	}
	return false
}

// collectFilterReads lists a filter's distinct reads in the order the
// filter first makes them, each with how many comparisons go through it.
func collectFilterReads(where Cond) []*filterRead {
	var order []*filterRead
	seen := map[string]*filterRead{}
	add := func(r *filterRead) {
		if old, ok := seen[r.key()]; ok {
			old.uses++
			return
		}
		r.uses = 1
		seen[r.key()] = r
		order = append(order, r)
	}
	for _, plan := range filterPlans(where) {
		for k := 0; k < cacheablePrefixes(plan); k++ {
			add(&filterRead{base: prefixKey(plan.Root, plan.Loads[:k]), depth: k, plan: plan,
				off: plan.Loads[k], size: 8, child: prefixKey(plan.Root, plan.Loads[:k+1])})
		}
		if cacheableValue(plan) {
			add(&filterRead{base: prefixKey(plan.Root, plan.Loads), depth: len(plan.Loads), plan: plan,
				off: plan.Read.Offset, size: plan.Read.Size})
		}
	}
	return order
}

// readGroup is what one probe read fetches: reads from one base, within
// spanWindow bytes of lo.
type readGroup struct {
	reads  []*filterRead
	lo, hi int64
}

// groupFilterReads gathers each base's reads into groups, lowest offset
// first; a group is worth hoisting when it saves a read: two reads in one
// copy, or one read that several comparisons share. Groups come out by
// depth, so a group's base pointer is cached before the group is read.
func groupFilterReads(reads []*filterRead) []readGroup {
	byBase := map[string][]*filterRead{}
	var bases []string
	for _, r := range reads {
		if byBase[r.base] == nil {
			bases = append(bases, r.base)
		}
		byBase[r.base] = append(byBase[r.base], r)
	}
	var groups []readGroup
	for _, base := range bases {
		rs := byBase[base]
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].off < rs[j].off })
		var g readGroup
		flush := func() {
			if len(g.reads) > 1 || (len(g.reads) == 1 && g.reads[0].uses > 1) {
				groups = append(groups, g)
			}
			g = readGroup{}
		}
		for _, r := range rs {
			// A value of size n lands on the stack n-aligned when its offset
			// is, relative to a lo that is 8-aligned: the verifier refuses
			// misaligned stack loads.
			aligned := r.off%int64(r.size) == 0
			if len(g.reads) > 0 && (!aligned || r.off+int64(r.size)-g.lo > spanWindow) {
				flush()
			}
			if len(g.reads) == 0 {
				g.lo = r.off &^ 7
				if !aligned || r.off < 0 {
					g.lo = r.off // read alone, exactly
				}
			}
			g.reads = append(g.reads, r)
			g.hi = max(g.hi, r.off+int64(r.size))
			if !aligned || r.off < 0 {
				flush()
			}
		}
		flush()
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].reads[0].depth < groups[j].reads[0].depth })
	return groups
}

// hoistFilterReads reads the filter's shared reads into the prefix cache
// and the value slots (see above).
func (e *emitter) hoistFilterReads(p program, where Cond) error {
	e.prefixes = map[string]int16{}
	e.cached = map[int16]bool{}
	e.values = map[string]cachedValue{}
	groups := groupFilterReads(collectFilterReads(where))
	slots, bits, maskSet := 0, int32(0), false
	for _, g := range groups {
		if slots+len(g.reads) > maxCacheSlots {
			continue
		}
		hasValue := false
		for _, r := range g.reads {
			hasValue = hasValue || r.child == ""
		}
		if hasValue && bits == maxValueGroups {
			continue
		}
		if hasValue && !maskSet {
			e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slotFaultMask, asm.R1, asm.DWord))
			maskSet = true
		}
		fault, done := e.label("hoist_fault"), e.label("hoist_done")
		first := g.reads[0]
		if err := e.baseOf(p, first.plan, first.depth, fault); err != nil {
			return err
		}
		slotOf := make([]int16, len(g.reads))
		for i := range g.reads {
			slotOf[i] = int16(cacheTop - 8*(slots+i))
		}
		if len(g.reads) == 1 {
			r := g.reads[0]
			if r.child == "" {
				e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slotOf[0], asm.R1, asm.DWord))
			}
			e.readTo(asm.RFP, slotOf[0], r.size, r.off, fault)
		} else {
			e.readTo(asm.RFP, slotSpan, int(g.hi-g.lo), g.lo, fault)
			for i, r := range g.reads {
				e.emit(
					asm.LoadMem(asm.R1, asm.RFP, slotSpan+int16(r.off-g.lo), sizeOf(r.size)),
					asm.StoreMem(asm.RFP, slotOf[i], asm.R1, asm.DWord),
				)
			}
		}
		e.emit(asm.Ja.Label(done))
		e.mark(fault)
		// Pointers cache 0; values are written too, so that every slot
		// is initialized on every path whatever the verifier makes of
		// the mask.
		for i := range g.reads {
			e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slotOf[i], asm.R1, asm.DWord))
		}
		if hasValue {
			e.emit(
				asm.LoadMem(asm.R1, asm.RFP, slotFaultMask, asm.DWord),
				asm.Or.Imm(asm.R1, 1<<bits),
				asm.StoreMem(asm.RFP, slotFaultMask, asm.R1, asm.DWord),
			)
		}
		e.mark(done)
		for i, r := range g.reads {
			if r.child != "" {
				e.prefixes[r.child] = slotOf[i]
				e.cached[slotOf[i]] = true
			} else {
				e.values[r.key()] = cachedValue{slot: slotOf[i], bit: 1 << bits}
			}
		}
		if hasValue {
			bits++
		}
		slots += len(g.reads)
	}
	return nil
}

// baseOf sets regBase to the pointer a plan's first depth loads produce:
// from the longest cached prefix, else from the root; fault when a
// pointer on the way is 0 or cannot be read.
func (e *emitter) baseOf(p program, plan *symbols.Plan, depth int, fault string) error {
	from := 0
	for j := depth; j > 0; j-- {
		if slot, ok := e.prefixes[prefixKey(plan.Root, plan.Loads[:j])]; ok && e.cached[slot] {
			e.emit(asm.LoadMem(regBase, asm.RFP, slot, asm.DWord), asm.JEq.Imm(regBase, 0, fault))
			from = j
			break
		}
	}
	if from == 0 {
		if _, err := e.root(p, plan, fault); err != nil {
			return err
		}
	}
	for _, load := range plan.Loads[from:depth] {
		e.readTo(asm.RFP, slotLeft, 8, load, fault)
		e.emit(asm.LoadMem(regBase, asm.RFP, slotLeft, asm.DWord))
	}
	return nil
}

// sizeOf is the load size of n bytes (1, 2, 4 or 8).
func sizeOf(n int) asm.Size {
	switch n {
	case 1:
		return asm.Byte
	case 2:
		return asm.Half
	case 4:
		return asm.Word
	}
	return asm.DWord
}

// cachedBase sets regBase from the longest cached prefix of plan's loads
// that operand may use, jumping to fault when that pointer is 0. It
// returns how many loads it covers (0: none cached).
func (e *emitter) cachedBase(plan *symbols.Plan, fault string) int {
	for k := cacheablePrefixes(plan); k > 0; k-- {
		if off, ok := e.prefixes[prefixKey(plan.Root, plan.Loads[:k])]; ok && e.cached[off] {
			e.emit(asm.LoadMem(regBase, asm.RFP, off, asm.DWord), asm.JEq.Imm(regBase, 0, fault))
			return k
		}
	}
	return 0
}

// cachedFinal loads a value the filter's start already read into R1, or
// jumps to fault when its read faulted; false when it is not cached.
func (e *emitter) cachedFinal(plan *symbols.Plan, fault string) bool {
	if plan.Root.Unavailable != "" || !cacheableValue(plan) {
		return false
	}
	v, ok := e.values[valueKey(plan)]
	if !ok {
		return false
	}
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, slotFaultMask, asm.DWord),
		asm.JSet.Imm(asm.R1, v.bit, fault),
		asm.LoadMem(asm.R1, asm.RFP, v.slot, asm.DWord),
	)
	return true
}
