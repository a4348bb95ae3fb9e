package probes

import (
	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// A filter such as the default set's reads many fields through the same
// pointers (r->connection, then its read and write events): without a
// cache, each comparison reads the whole chain again, and a hit the
// filter drops costs a dozen needless reads. hoistFilterPrefixes reads
// every pointer prefix that two or more comparisons share once, at the
// filter's start, into the prefix cache; operand then starts from the
// longest cached prefix. The reads happen on every path, before any
// branch, so a cached slot is valid wherever the filter reads it; a
// prefix whose reads fault caches 0, and reading through 0 faults as
// the chain would have.

// filterPlans lists the plans of a filter's numeric comparisons.
func filterPlans(c Cond, out []*symbols.Plan) []*symbols.Plan {
	switch c := c.(type) {
	case And:
		return filterPlans(c.R, filterPlans(c.L, out))
	case Or:
		return filterPlans(c.R, filterPlans(c.L, out))
	case Not:
		return filterPlans(c.X, out)
	case Compare:
		for _, o := range []Operand{c.L, c.R} {
			if o.Plan != nil && o.Plan.Root.Unavailable == "" {
				out = append(out, o.Plan)
			}
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

// hoistFilterPrefixes reads the filter's shared pointer prefixes into the
// prefix cache (see above).
func (e *emitter) hoistFilterPrefixes(p program, where Cond) error {
	plans := filterPlans(where, nil)
	uses := map[string]int{}
	var order []string
	first := map[string]*symbols.Plan{}
	depth := map[string]int{}
	for _, plan := range plans {
		for k := 1; k <= cacheablePrefixes(plan); k++ {
			key := prefixKey(plan.Root, plan.Loads[:k])
			if uses[key] == 0 {
				order = append(order, key)
				first[key], depth[key] = plan, k
			}
			uses[key]++
		}
	}
	e.prefixes = map[string]int16{}
	e.cached = map[int16]bool{}
	for _, key := range order {
		if uses[key] < 2 || len(e.prefixes) == maxCacheSlots {
			continue
		}
		plan, k := first[key], depth[key]
		off := int16(cacheTop - 8*len(e.prefixes))
		fault, done := e.label("hoist_fault"), e.label("hoist_done")
		// Start from the longest prefix already cached, else the root.
		from := 0
		for j := k - 1; j > 0; j-- {
			if parent, ok := e.prefixes[prefixKey(plan.Root, plan.Loads[:j])]; ok && e.cached[parent] {
				e.emit(asm.LoadMem(regBase, asm.RFP, parent, asm.DWord), asm.JEq.Imm(regBase, 0, fault))
				from = j
				break
			}
		}
		if from == 0 {
			if _, err := e.root(p, plan, fault); err != nil {
				return err
			}
		}
		for _, load := range plan.Loads[from:k] {
			e.readTo(asm.RFP, off, 8, load, fault)
			e.emit(asm.LoadMem(regBase, asm.RFP, off, asm.DWord))
		}
		e.emit(asm.Ja.Label(done))
		e.mark(fault)
		e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
		e.mark(done)
		e.prefixes[key] = off
		e.cached[off] = true
	}
	return nil
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
