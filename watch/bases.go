package watch

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Base is where the base register of a write may point, relative to the
// start of the watched object. The displacement of a write to the field
// is then field.Offset - At:
//
//   - At 0: a pointer to the object itself (rev->eof = 1: 0x9(%rbx)).
//   - At > 0: a pointer to an aggregate member of the object, as code that
//     gets the object back from an embedded node has (ngx_event_t from its
//     timer rbtree node: ev = node - 40; ev->timedout = 1 is -0x1f(%rbx)).
//   - At < 0: a pointer to a struct that embeds the object at -At
//     (ngx_thread_task_t embeds ngx_event_t event at 32: task->event.complete
//     is 0x29(%rax)).
type Base struct {
	At  int64
	Via string // "" for the object itself, else the member that makes it
	// Tags are the struct tags of what the base points to there (the
	// member's or the container's type), to judge DWARF variables.
	Tags []string
}

// maxBases bounds the places a base may point to: each widens the search
// (and the false candidates) by a displacement window.
const maxBases = 16

// interiorBases lists the aggregate members of the watched struct (at any
// depth) as places a base register may point to.
func interiorBases(typeName string, t dwarf.Type) []Base {
	ms, err := symbols.Members(t)
	if err != nil {
		return nil
	}
	var out []Base
	seen := map[int64]bool{0: true}
	var path []string
	for _, m := range ms {
		path = append(path[:m.Depth], m.Name)
		if m.BitSize > 0 || m.BitOffset%8 != 0 || seen[m.BitOffset/8] {
			continue
		}
		switch u := symbols.Underlying(m.Type).(type) {
		case *dwarf.StructType, *dwarf.ArrayType:
			seen[m.BitOffset/8] = true
			b := Base{At: m.BitOffset / 8, Via: typeName + "." + strings.Trim(strings.Join(path, "."), ".")}
			if st, ok := u.(*dwarf.StructType); ok && st.StructName != "" {
				b.Tags = []string{st.StructName}
			}
			out = append(out, b)
		}
	}
	return out
}

// containerBases scans the DWARF types of every unit for structs that
// embed the watched struct by value (directly, in arrays, or through
// other structs) and returns where the containers start relative to it.
// Types defined inside functions are not looked at.
func containerBases(bin *symbols.Binary, tag string, size int64) []Base {
	d := bin.DWARF()
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
	// embeds[s]: offsets of the watched struct inside struct s, with paths.
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
			for i := int64(0); i < a.count && i < maxBases && esz > 0; i++ {
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
	found := map[int64][]string{}
	tags := map[int64][]string{}
	for off, s := range structs {
		if s.name == tag && s.size == size {
			continue
		}
		for _, p := range embeds(off) {
			name := s.name
			if name == "" {
				name = "<anonymous>"
			}
			via := "struct " + name + p.path
			if !contains(found[p.off], via) {
				found[p.off] = append(found[p.off], via)
			}
			if s.name != "" && !contains(tags[p.off], s.name) {
				tags[p.off] = append(tags[p.off], s.name)
			}
		}
	}
	var out []Base
	for off, vias := range found {
		if off == 0 {
			continue // same displacements as the object itself
		}
		sort.Strings(vias)
		sort.Strings(tags[off])
		out = append(out, Base{At: -off, Via: strings.Join(vias, ", "), Tags: tags[off]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At > out[j].At })
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
