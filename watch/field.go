package watch

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Sentinel errors of ResolveField; match them with errors.Is. A member
// that does not exist is symbols.ErrFieldNotFound (a *symbols.NotFoundError
// with the closest names), an unknown type symbols.ErrTypeNotFound.
var (
	ErrNotField = errors.New("not a watchable field")
	ErrTooWide  = errors.New("field wider than 8 bytes")
)

// FieldRef is a watched field: which bits of an object of type Type hold
// it. Offsets count from the start of that object, so an instruction that
// writes through a pointer to the object has a displacement near Offset.
type FieldRef struct {
	Type      string // the struct or union holding the field, e.g. "ngx_event_t"
	Member    string // the member path inside Type, e.g. "eof" or "timer.key"
	Offset    int64  // byte holding the field's lowest bit
	BitOffset int    // of the field's lowest bit within that byte, 0-7
	BitSize   int    // 1-64
	Bitfield  bool   // declared with a width (unsigned eof:1)
	TypeName  string // C type of the member, e.g. "unsigned int"

	// The watched struct's tag ("ngx_event_s") and size, to recognise
	// global objects of its type written rip-relative. Empty when the ref
	// is not from DWARF: such writes are then not looked for.
	StructTag  string
	StructSize int64

	// Bases are where, besides the object's start, the base register of
	// a write to the field may point (see Base). ResolveField fills them;
	// none means the start only.
	Bases []Base
}

// bases returns the object's start followed by Bases.
func (f FieldRef) bases() []Base {
	return append([]Base{{}}, f.Bases...)
}

// Bytes is how many bytes the field's bits touch, from Offset on.
func (f FieldRef) Bytes() int64 { return int64(f.BitOffset+f.BitSize+7) / 8 }

// End is one past the last byte holding the field.
func (f FieldRef) End() int64 { return f.Offset + f.Bytes() }

// Mask has the field's BitSize low bits set: field values are right-aligned.
func (f FieldRef) Mask() uint64 { return lowBits(f.BitSize) }

// Overlaps reports whether writing size bytes at disp from the start of
// the object writes some of the field's bytes.
func (f FieldRef) Overlaps(disp int64, size int) bool {
	return disp < f.End() && f.Offset < disp+int64(size)
}

func (f FieldRef) String() string {
	if f.Bitfield {
		return fmt.Sprintf("%s.%s (byte %d bit %d, %d bit%s)", f.Type, f.Member, f.Offset, f.BitOffset, f.BitSize, plural(f.BitSize))
	}
	return fmt.Sprintf("%s.%s (bytes %d-%d)", f.Type, f.Member, f.Offset, f.End()-1)
}

func (f FieldRef) valid() error {
	if f.BitSize > 64 {
		return fmt.Errorf("field %s has %d bits: %w", f.Member, f.BitSize, ErrTooWide)
	}
	if f.BitSize <= 0 || f.BitOffset < 0 || f.BitOffset > 7 || f.Offset < 0 {
		return fmt.Errorf("field %s: bit offset %d, %d bits: %w", f.Member, f.BitOffset, f.BitSize, ErrNotField)
	}
	if f.Bytes() > 8 {
		return fmt.Errorf("field %s spans %d bytes: %w", f.Member, f.Bytes(), ErrTooWide)
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func lowBits(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<uint(n) - 1
}

// ResolveField finds a member of a struct type in the binary's DWARF:
// ResolveField(bin, "ngx_event_t", "eof"). The path may go through
// embedded structs and arrays ("timer.key", "addr[2]") and through
// pointers ("read->eof" from ngx_connection_t): after the last "->" the
// watched object is the one pointed to, and Type names it.
func ResolveField(bin *symbols.Binary, typeName, path string) (FieldRef, error) {
	t, err := bin.Type(typeName)
	if err != nil {
		return FieldRef{}, err
	}
	steps, err := parseMemberPath(path)
	if err != nil {
		return FieldRef{}, err
	}
	ref := FieldRef{Type: typeName}
	top := t         // the watched object's type
	var bitOff int64 // from the start of the current object
	var member []string
	var bitSize int64
	for _, s := range steps {
		u := symbols.Underlying(t)
		switch s.op {
		case "->":
			ptr, ok := u.(*dwarf.PtrType)
			if !ok {
				return FieldRef{}, fmt.Errorf("%s: %s is %s, not a pointer: use '.': %w", path, describe(ref.Type, member), symbols.TypeName(t), ErrNotField)
			}
			if _, void := ptr.Type.(*dwarf.VoidType); void || ptr.Type == nil {
				return FieldRef{}, fmt.Errorf("%s: %s is void *: watch a field of the type it points to instead: %w", path, describe(ref.Type, member), ErrNotField)
			}
			t = complete(bin, ptr.Type)
			ref.Type = symbols.TypeName(t)
			bitOff, member, bitSize = 0, nil, 0
			u = symbols.Underlying(t)
			top = t
		case ".":
			if _, ok := u.(*dwarf.PtrType); ok {
				return FieldRef{}, fmt.Errorf("%s: %s is a pointer (%s): use '->': %w", path, describe(ref.Type, member), symbols.TypeName(t), ErrNotField)
			}
		case "[]":
			arr, ok := u.(*dwarf.ArrayType)
			if !ok {
				return FieldRef{}, fmt.Errorf("%s: %s is %s, not an array: %w", path, describe(ref.Type, member), symbols.TypeName(t), ErrNotField)
			}
			if arr.Count >= 0 && s.index >= arr.Count {
				return FieldRef{}, fmt.Errorf("%s: index %d out of %s: %w", path, s.index, symbols.TypeName(t), ErrNotField)
			}
			t = arr.Type
			bitOff += s.index * arr.Type.Size() * 8
			member[len(member)-1] += fmt.Sprintf("[%d]", s.index)
			continue
		}
		if _, ok := u.(*dwarf.StructType); !ok {
			return FieldRef{}, fmt.Errorf("%s: %s is %s, which has no member %q: %w", path, describe(ref.Type, member), symbols.TypeName(t), s.name, ErrNotField)
		}
		ms, err := symbols.Members(t)
		if err != nil {
			return FieldRef{}, fmt.Errorf("%s: %v: %w", path, err, ErrNotField)
		}
		var names []string
		found := false
		for _, m := range ms {
			if m.Name == "" {
				continue
			}
			names = append(names, m.Name)
			if m.Name == s.name && !found {
				found = true
				// Members lays out from the start of t: add where t is.
				bitOff += m.BitOffset
				bitSize = m.BitSize
				t = m.Type
			}
		}
		if !found {
			where := symbols.TypeName(t)
			if len(member) > 0 {
				where = describe(ref.Type, member) + " (" + where + ")"
			}
			return FieldRef{}, fmt.Errorf("%s: %w", path, &symbols.NotFoundError{Kind: symbols.ErrFieldNotFound, Name: s.name, Where: where, Closest: symbols.Closest(s.name, names, 5)})
		}
		member = append(member, s.name)
	}
	if len(member) == 0 {
		return FieldRef{}, fmt.Errorf("%q names no member of %s: %w", path, ref.Type, ErrNotField)
	}
	ref.Member = strings.Join(member, ".")
	ref.TypeName = symbols.TypeName(t)
	size := t.Size()
	switch u := symbols.Underlying(t).(type) {
	case *dwarf.StructType, *dwarf.ArrayType:
		what := "an array"
		hint := "index it"
		if st, ok := u.(*dwarf.StructType); ok {
			what = "a " + st.Kind
			var names []string
			if ms, err := symbols.Members(t); err == nil {
				for _, m := range ms {
					if m.Name != "" && m.Depth == 0 {
						names = append(names, m.Name)
					}
				}
			}
			hint = "watch one of its members: " + strings.Join(names, ", ")
		}
		if size > 8 {
			return FieldRef{}, fmt.Errorf("%s.%s is %s (%s, %d bytes); %s: %w", ref.Type, ref.Member, what, symbols.TypeName(t), size, hint, ErrTooWide)
		}
		// A small aggregate is watched as its bytes.
	case *dwarf.FuncType, *dwarf.VoidType:
		return FieldRef{}, fmt.Errorf("%s.%s is %s: %w", ref.Type, ref.Member, symbols.TypeName(u), ErrNotField)
	}
	ref.Offset = bitOff / 8
	ref.BitOffset = int(bitOff % 8)
	if bitSize > 0 {
		ref.Bitfield = true
		ref.BitSize = int(bitSize)
	} else {
		if size > 8 {
			return FieldRef{}, fmt.Errorf("%s.%s is %s, %d bytes: %w", ref.Type, ref.Member, symbols.TypeName(t), size, ErrTooWide)
		}
		if size <= 0 {
			return FieldRef{}, fmt.Errorf("%s.%s is %s, of unknown size: %w", ref.Type, ref.Member, symbols.TypeName(t), ErrNotField)
		}
		ref.BitSize = int(size * 8)
	}
	if err := ref.valid(); err != nil {
		return FieldRef{}, err
	}
	if st, ok := symbols.Underlying(top).(*dwarf.StructType); ok && st.StructName != "" {
		ref.StructTag, ref.StructSize = st.StructName, st.Size()
	}
	ref.Bases = append(interiorBases(ref.Type, top), containerBases(bin, ref.StructTag, ref.StructSize)...)
	if len(ref.Bases) > maxBases {
		ref.Bases = ref.Bases[:maxBases]
	}
	return ref, nil
}

// complete returns the definition of a struct that a unit only declares
// (a pointer to struct ngx_event_s where ngx_event.h is not included),
// found by its tag; t itself otherwise.
func complete(bin *symbols.Binary, t dwarf.Type) dwarf.Type {
	st, ok := symbols.Underlying(t).(*dwarf.StructType)
	if !ok || !st.Incomplete || st.StructName == "" {
		return t
	}
	if def, err := bin.Type(st.Kind + " " + st.StructName); err == nil {
		if _, isTypedef := t.(*dwarf.TypedefType); isTypedef {
			// Keep the typedef's name for messages and Type.
			return &dwarf.TypedefType{CommonType: dwarf.CommonType{Name: t.(*dwarf.TypedefType).Name, ByteSize: def.Size()}, Type: def}
		}
		return def
	}
	return t
}

func describe(typ string, member []string) string {
	if len(member) == 0 {
		return typ
	}
	return typ + "." + strings.Join(member, ".")
}

type pathStep struct {
	op    string // ".", "->" or "[]"
	name  string
	index int64
}

// parseMemberPath splits "a.b->c[2].d" into steps; a leading name is a
// member of the type itself (op ".").
func parseMemberPath(path string) ([]pathStep, error) {
	s := strings.TrimSpace(path)
	if s == "" {
		return nil, fmt.Errorf("empty member path: %w", ErrNotField)
	}
	bad := func(at int, msg string) error {
		return fmt.Errorf("member path %q: %s at offset %d: %w", path, msg, at, ErrNotField)
	}
	var steps []pathStep
	op := "."
	if strings.HasPrefix(s, "->") {
		op, s = "->", s[2:]
	} else if strings.HasPrefix(s, ".") {
		s = s[1:]
	}
	for pos := len(path) - len(s); ; {
		i := 0
		for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || i > 0 && s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 {
			return nil, bad(pos, "expected a member name")
		}
		steps = append(steps, pathStep{op: op, name: s[:i]})
		s, pos = s[i:], pos+i
		for strings.HasPrefix(s, "[") {
			j := strings.IndexByte(s, ']')
			if j < 0 {
				return nil, bad(pos, "missing ]")
			}
			n, err := strconv.ParseInt(strings.TrimSpace(s[1:j]), 0, 64)
			if err != nil || n < 0 {
				return nil, bad(pos, "expected a constant index")
			}
			steps = append(steps, pathStep{op: "[]", index: n})
			s, pos = s[j+1:], pos+j+1
		}
		switch {
		case s == "":
			return steps, nil
		case strings.HasPrefix(s, "->"):
			op, s, pos = "->", s[2:], pos+2
		case strings.HasPrefix(s, "."):
			op, s, pos = ".", s[1:], pos+1
		default:
			return nil, bad(pos, fmt.Sprintf("unexpected %q", s))
		}
	}
}
