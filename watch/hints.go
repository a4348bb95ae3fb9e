package watch

import (
	"debug/dwarf"
	"fmt"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// TypeHint says what DWARF knows of the base register at a site: which
// variables it holds there, and whether their types fit the site's
// reading (the watched object, or the member or container Base names).
// A displacement alone cannot tell ev->eof from buf->pos; the variables
// usually can.
type TypeHint uint8

const (
	// HintNone: no variable is described as living in the base register
	// at the instruction (optimized out, a temporary, no DWARF).
	HintNone TypeHint = iota
	// HintMatch: a variable in the base register points where the site
	// assumes: to the watched struct (BaseAt 0), to the member at BaseAt,
	// or to the container that embeds the object at -BaseAt.
	HintMatch
	// HintOpaque: only variables whose type says nothing (void *, char *,
	// integers) are there.
	HintOpaque
	// HintMismatch: every variable there points to some other struct: the
	// write is most likely to another type's member.
	HintMismatch
)

var hintNames = [...]string{HintNone: "none", HintMatch: "match", HintOpaque: "opaque", HintMismatch: "mismatch"}

func (h TypeHint) String() string {
	if int(h) < len(hintNames) {
		return hintNames[h]
	}
	return fmt.Sprintf("hint(%d)", h)
}

// hintFor judges one variable, whose value is the site's base register
// plus add, against the site's reading.
func hintFor(bin *symbols.Binary, s *Site, e *dwarf.Entry, add int64) (TypeHint, string) {
	name, _ := bin.Attr(e, dwarf.AttrName).(string)
	off, ok := bin.Attr(e, dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return HintOpaque, name
	}
	t, err := bin.DWARF().Type(off)
	if err != nil {
		return HintOpaque, name
	}
	label := fmt.Sprintf("%s (%s)", name, symbols.TypeName(t))
	if add != 0 {
		label = fmt.Sprintf("%s (%s) = %s%+d", name, symbols.TypeName(t), symbols.RegName(s.Base), add)
	}
	ptr, ok := symbols.Underlying(t).(*dwarf.PtrType)
	if !ok || ptr.Type == nil {
		return HintOpaque, label
	}
	st, ok := symbols.Underlying(ptr.Type).(*dwarf.StructType)
	if !ok {
		return HintOpaque, label
	}
	if st.StructName == "" {
		// typedef struct { ... } ngx_str_t: not the watched struct,
		// which has a tag, nor a member or container of it we know.
		if s.Field.StructTag == "" {
			return HintOpaque, label
		}
		return HintMismatch, label
	}
	// The variable points at offset p from the start of the watched
	// object, if the site's reading is right.
	p := s.BaseAt + add
	if p == 0 && st.StructName == s.Field.StructTag && st.Size() == s.Field.StructSize {
		return HintMatch, label
	}
	for _, b := range s.Field.Bases {
		if b.At == p && contains(b.Tags, st.StructName) {
			return HintMatch, label
		}
	}
	return HintMismatch, label
}

// judge combines the verdicts of the variables in one base register.
func judge(s *Site, h TypeHint, label string) {
	rank := func(h TypeHint) int {
		switch h {
		case HintMatch:
			return 3
		case HintOpaque:
			return 2
		case HintMismatch:
			return 1
		}
		return 0
	}
	if rank(h) > rank(s.Hint) {
		s.Hint = h
		s.BaseVars = append([]string{label}, s.BaseVars...)
	} else {
		s.BaseVars = append(s.BaseVars, label)
	}
}
