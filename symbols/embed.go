package symbols

import (
	"debug/dwarf"
	"fmt"
	"slices"
	"sort"
)

// Embedding is a place where a struct or union type holds a given struct
// by value.
type Embedding struct {
	// Container is the tag of the struct or union that holds it, "" for
	// an anonymous one.
	Container string
	// Path is the member path from the container to the embedded struct:
	// ".event", ".timers[2].ev".
	Path string
	// Offset is where the embedded struct starts in the container.
	Offset int64
}

// Embeddings lists where the struct and union types of every unit hold
// the struct with the given tag and size by value: directly, in arrays or
// through other structs. Only the first maxIndex elements of an array
// are listed. The struct itself is not a container of itself; types
// defined inside functions are not looked at. The list is sorted by
// Offset, Container and Path; nil without DWARF.
func (b *Binary) Embeddings(tag string, size int64, maxIndex int) []Embedding {
	d := b.dwarf
	if d == nil || tag == "" || size <= 0 {
		return nil
	}
	type member struct {
		name string
		off  int64
		typ  dwarf.Offset
	}
	type agg struct {
		name    string
		size    int64
		members []member
	}
	structs := map[dwarf.Offset]*agg{}
	alias := map[dwarf.Offset]dwarf.Offset{} // typedefs and qualifiers
	type array struct {
		elem  dwarf.Offset
		count int64
	}
	arrays := map[dwarf.Offset]array{}

	// Walk the type DIEs of every unit: top-level entries and the
	// children of structs, unions and arrays; function bodies are skipped.
	type frame struct {
		agg *agg         // members go here, or nil
		arr dwarf.Offset // an array whose subranges these are, or 0
	}
	r := d.Reader()
	var stack []frame
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		var top frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		push := frame{}
		descend := false
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			descend = true
		case dwarf.TagStructType, dwarf.TagUnionType:
			if isDecl, _ := e.Val(dwarf.AttrDeclaration).(bool); !isDecl {
				sz, _ := e.Val(dwarf.AttrByteSize).(int64)
				name, _ := e.Val(dwarf.AttrName).(string)
				push.agg = &agg{name: name, size: sz}
				structs[e.Offset] = push.agg
				descend = true
			}
		case dwarf.TagTypedef, dwarf.TagConstType, dwarf.TagVolatileType, dwarf.TagRestrictType, dwarf.TagAtomicType:
			if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
				alias[e.Offset] = t
			}
		case dwarf.TagArrayType:
			if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
				arrays[e.Offset] = array{elem: t, count: -1}
				push.arr = e.Offset
				descend = true
			}
		case dwarf.TagSubrangeType:
			// The first subrange of an array gives its count; a
			// multi-dimensional array is counted by its first dimension
			// only (enough to know it holds the struct).
			if a, ok := arrays[top.arr]; ok && top.arr != 0 && a.count < 0 {
				if c, ok := e.Val(dwarf.AttrCount).(int64); ok {
					a.count = c
				} else if ub, ok := e.Val(dwarf.AttrUpperBound).(int64); ok {
					a.count = ub + 1
				} else {
					a.count = 0
				}
				arrays[top.arr] = a
			}
		case dwarf.TagMember:
			if top.agg != nil {
				if _, bitfield := e.Val(dwarf.AttrBitSize).(int64); !bitfield {
					off, _ := e.Val(dwarf.AttrDataMemberLoc).(int64)
					t, _ := e.Val(dwarf.AttrType).(dwarf.Offset)
					name, _ := e.Val(dwarf.AttrName).(string)
					top.agg.members = append(top.agg.members, member{name, off, t})
				}
			}
		}
		if e.Children {
			if descend {
				stack = append(stack, push)
			} else {
				r.SkipChildren()
			}
		}
	}

	resolve := func(off dwarf.Offset) dwarf.Offset {
		for range 16 {
			next, ok := alias[off]
			if !ok {
				break
			}
			off = next
		}
		return off
	}
	// embeds[s]: offsets of the struct inside struct s, with paths.
	type place struct {
		off  int64
		path string
	}
	memo := map[dwarf.Offset][]place{}
	busy := map[dwarf.Offset]bool{}
	var embeds func(off dwarf.Offset) []place
	embeds = func(off dwarf.Offset) []place {
		off = resolve(off)
		if a, ok := arrays[off]; ok {
			inner := embeds(a.elem)
			if len(inner) == 0 || a.count <= 0 {
				return nil
			}
			esz := int64(0)
			if s, ok := structs[resolve(a.elem)]; ok {
				esz = s.size
			}
			var out []place
			for i := int64(0); i < a.count && i < int64(maxIndex) && esz > 0; i++ {
				for _, p := range inner {
					out = append(out, place{i*esz + p.off, fmt.Sprintf("[%d]%s", i, p.path)})
				}
			}
			return out
		}
		s, ok := structs[off]
		if !ok {
			return nil
		}
		if s.name == tag && s.size == size {
			return []place{{0, ""}}
		}
		if p, ok := memo[off]; ok {
			return p
		}
		if busy[off] {
			return nil
		}
		busy[off] = true
		var out []place
		for _, m := range s.members {
			for _, p := range embeds(m.typ) {
				out = append(out, place{m.off + p.off, "." + m.name + p.path})
			}
		}
		busy[off] = false
		memo[off] = out
		return out
	}
	var out []Embedding
	for off, s := range structs {
		if s.name == tag && s.size == size {
			continue
		}
		for _, p := range embeds(off) {
			out = append(out, Embedding{Container: s.name, Path: p.path, Offset: p.off})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		return a.Path < b.Path
	})
	// A type defined in several units is listed once.
	return slices.Compact(out)
}
