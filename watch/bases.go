package watch

import (
	"debug/dwarf"
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

// containerBases lists the structs that embed the watched struct by
// value (directly, in arrays, or through other structs), from
// symbols.Embeddings, as places a base register may point to: where the
// containers start relative to the watched object.
func containerBases(bin *symbols.Binary, tag string, size int64) []Base {
	found := map[int64][]string{}
	tags := map[int64][]string{}
	for _, e := range bin.Embeddings(tag, size, maxBases) {
		name := e.Container
		if name == "" {
			name = "<anonymous>"
		}
		via := "struct " + name + e.Path
		if !contains(found[e.Offset], via) {
			found[e.Offset] = append(found[e.Offset], via)
		}
		if e.Container != "" && !contains(tags[e.Offset], e.Container) {
			tags[e.Offset] = append(tags[e.Offset], e.Container)
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
