package symbols

import (
	"debug/dwarf"
	"fmt"
	"strings"
)

// Member is a struct or union member with its position from the start of
// the outermost struct being laid out.
type Member struct {
	Name string
	Type dwarf.Type
	// BitOffset is the absolute bit offset of the member from the start of
	// the struct, whatever DWARF version described it.
	BitOffset int64
	BitSize   int64 // 0 unless a bitfield
	Size      int64 // bytes; for bitfields, of the declared type
	Depth     int   // nesting of anonymous members, for printing
}

// ByteOffset is the byte holding the member's first bit.
func (m Member) ByteOffset() int64 { return m.BitOffset / 8 }

// Type looks up a named type: a typedef ("ngx_http_request_t"), a tagged
// type ("struct ngx_http_request_s") or a bare tag ("ngx_http_request_s").
func (b *Binary) Type(name string) (dwarf.Type, error) {
	if b.dwarf == nil {
		return nil, fmt.Errorf("type %q: %w: %s", name, ErrNoDebugInfo, NoDebugInfoHint)
	}
	ix, err := b.idx()
	if err != nil {
		return nil, err
	}
	name = strings.Join(strings.Fields(name), " ")
	keys := []string{name}
	if !strings.ContainsRune(name, ' ') {
		keys = append(keys, "struct "+name, "union "+name, "enum "+name)
	}
	for _, k := range keys {
		// The first units may only declare the type (LTO splits them).
		for seen := 0; ; {
			offs := b.typeOffsets(ix, k, seen)
			if len(offs) <= seen {
				break
			}
			for _, off := range offs[seen:] {
				t, err := b.dwarf.Type(off)
				if err == nil && !isIncomplete(t) {
					b.fixZeroedArrays(t)
					return t, nil
				}
			}
			seen = len(offs)
		}
	}
	names := b.allTypeNames(ix)
	return nil, &NotFoundError{Kind: ErrTypeNotFound, Name: name, Where: b.Path, Closest: Closest(name, names, 5)}
}

func isIncomplete(t dwarf.Type) bool {
	s, ok := Underlying(t).(*dwarf.StructType)
	return ok && s.Incomplete
}

// Underlying strips typedefs and qualifiers.
func Underlying(t dwarf.Type) dwarf.Type {
	for range 32 {
		switch u := t.(type) {
		case *dwarf.TypedefType:
			t = u.Type
		case *dwarf.QualType:
			t = u.Type
		default:
			return t
		}
	}
	return t
}

// Members lays out a struct or union, expanding anonymous members the way
// C lets them be named.
func Members(t dwarf.Type) ([]Member, error) {
	st, ok := Underlying(t).(*dwarf.StructType)
	if !ok {
		return nil, fmt.Errorf("%s is not a struct or union", typeName(t))
	}
	var out []Member
	collectMembers(st, 0, 0, &out)
	return out, nil
}

// fieldBitOffset is the bit offset of a field from the start of its struct.
func fieldBitOffset(f *dwarf.StructField) int64 {
	switch {
	case f.BitSize > 0 && f.ByteSize > 0:
		// DWARF 2-4 DW_AT_bit_offset counts from the most significant
		// bit of a ByteSize storage unit at ByteOffset (little-endian).
		return f.ByteOffset*8 + f.ByteSize*8 - f.BitOffset - f.BitSize
	case f.BitSize > 0:
		// DW_AT_data_bit_offset counts from the start of the struct.
		return f.ByteOffset*8 + f.DataBitOffset
	default:
		return f.ByteOffset * 8
	}
}

func collectMembers(st *dwarf.StructType, base int64, depth int, out *[]Member) {
	if depth > maxTypeDepth {
		return // an anonymous member that holds its own struct: corrupt DWARF
	}
	for _, f := range st.Field {
		m := Member{Name: f.Name, Type: f.Type, Size: f.Type.Size(), Depth: depth}
		m.BitSize = f.BitSize
		m.BitOffset = base + fieldBitOffset(f)
		*out = append(*out, m)
		if f.Name == "" {
			if inner, ok := Underlying(f.Type).(*dwarf.StructType); ok {
				collectMembers(inner, m.BitOffset, depth+1, out)
			}
		}
	}
}

// member finds a named member, looking through anonymous members.
func member(t dwarf.Type, name string) (Member, []string, bool) {
	ms, err := Members(t)
	if err != nil {
		return Member{}, nil, false
	}
	var names []string
	for _, m := range ms {
		if m.Name == "" {
			continue
		}
		if m.Name == name {
			return m, nil, true
		}
		names = append(names, m.Name)
	}
	return Member{}, names, false
}

// Layout renders a struct the way pahole does: one member a line with its
// byte offset, size and, for bitfields, bit offset within that byte.
func Layout(t dwarf.Type) (string, error) {
	ms, err := Members(t)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s {\t/* size %d */\n", typeName(t), t.Size())
	for _, m := range ms {
		indent := strings.Repeat("\t", m.Depth+1)
		name := m.Name
		if name == "" {
			name = "<anonymous>"
		}
		if m.BitSize > 0 {
			fmt.Fprintf(&b, "%s%-32s %s:%d;\t/* byte %4d bit %d, %d bits */\n", indent, typeName(m.Type), name, m.BitSize, m.ByteOffset(), m.BitOffset%8, m.BitSize)
		} else {
			fmt.Fprintf(&b, "%s%-32s %s;\t/* byte %4d, %d bytes */\n", indent, typeName(m.Type), name, m.ByteOffset(), m.Size)
		}
	}
	b.WriteString("}\n")
	return b.String(), nil
}

func typeName(t dwarf.Type) string { return TypeName(t) }

// maxTypeDepth bounds the walks through a type's parts: corrupt DWARF can
// make a type its own part, which would recurse until the stack runs out.
const maxTypeDepth = 64

// TypeName spells a type as C does: "ngx_event_t *", "u_char [16]",
// "struct <anonymous>".
func TypeName(t dwarf.Type) string { return typeNameDepth(t, 0) }

func typeNameDepth(t dwarf.Type, depth int) string {
	if depth > maxTypeDepth {
		return "..."
	}
	TypeName := func(t dwarf.Type) string { return typeNameDepth(t, depth+1) }
	switch u := t.(type) {
	case nil:
		return "void"
	case *dwarf.PtrType:
		if u.Type == nil {
			return "void *"
		}
		if _, ok := u.Type.(*dwarf.FuncType); ok {
			return "(function) *"
		}
		inner := TypeName(u.Type)
		if strings.HasSuffix(inner, "*") {
			return inner + "*"
		}
		return inner + " *"
	case *dwarf.ArrayType:
		return fmt.Sprintf("%s [%d]", TypeName(u.Type), u.Count)
	case *dwarf.QualType:
		return u.Qual + " " + TypeName(u.Type)
	case *dwarf.StructType:
		if u.StructName == "" {
			return u.Kind + " <anonymous>"
		}
		return u.Kind + " " + u.StructName
	case *dwarf.VoidType:
		return "void"
	case *dwarf.FuncType:
		return "(function)" // its String walks its parameters' types, without a bound
	}
	return t.String()
}

// ReturnType returns the declared return type of an instance (nil for void).
func (b *Binary) ReturnType(fn *Function) (dwarf.Type, error) {
	die, _ := b.subprogram(fn)
	if b.dwarf == nil || die == 0 {
		return nil, fmt.Errorf("%s: %w", fn.Symbol, ErrNoDebugInfo)
	}
	r := b.dwarf.Reader()
	r.Seek(die)
	e, err := r.Next()
	if err != nil || e == nil {
		return nil, fmt.Errorf("%s: reading DWARF: %w", fn.Symbol, orNoEntry(err))
	}
	off, ok := b.Attr(e, dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return nil, nil
	}
	return b.dwarf.Type(off)
}

// fixZeroedArrays undoes a debug/dwarf heuristic that gives an array member
// length 0 when the next member has the same byte offset (meant for old
// compilers that wrote x[0] as x[1]). A bitfield after an array sets it
// off wrongly: DWARF 5 gives bitfields no byte offset (0 for debug/dwarf),
// DWARF 4 the offset of their storage unit, which may be the array's. The
// array's own DIE still has its length: it is restored from there when the
// array fits before the next member. Embedded structs are fixed too. The
// fix changes debug/dwarf's cached types, so later users of them see it.
func (b *Binary) fixZeroedArrays(t dwarf.Type) {
	st, ok := Underlying(t).(*dwarf.StructType)
	if !ok || b.dwarf == nil {
		return
	}
	ix, err := b.idx()
	if err != nil {
		return
	}
	// The struct's DIE offset is not in the type: find a DIE describing it
	// by name (typedefs, then the tag).
	var keys []string
	for u := t; ; {
		if td, ok := u.(*dwarf.TypedefType); ok {
			keys = append(keys, td.Name)
			u = td.Type
			continue
		}
		if q, ok := u.(*dwarf.QualType); ok {
			u = q.Type
			continue
		}
		break
	}
	if st.StructName != "" {
		keys = append(keys, st.Kind+" "+st.StructName)
	}
	for _, k := range keys {
		for _, off := range b.typeOffsets(ix, k, 0) {
			if b.fixStructArrays(st, off, 0) {
				return
			}
		}
	}
}

// fixStructArrays fixes st from the DIE at off (a struct, or a typedef or
// qualifier of one); it reports false if that DIE does not describe st.
func (b *Binary) fixStructArrays(st *dwarf.StructType, off dwarf.Offset, depth int) bool {
	if depth > 16 {
		return false
	}
	r := b.dwarf.Reader()
	var e *dwarf.Entry
	for range 8 { // typedefs and qualifiers down to the struct
		r.Seek(off)
		var err error
		if e, err = r.Next(); err != nil || e == nil {
			return false
		}
		if e.Tag == dwarf.TagStructType || e.Tag == dwarf.TagUnionType {
			break
		}
		if off, _ = e.Val(dwarf.AttrType).(dwarf.Offset); off == 0 {
			return false
		}
	}
	if e.Tag != dwarf.TagStructType && e.Tag != dwarf.TagUnionType || !e.Children {
		return false
	}
	if size, _ := e.Val(dwarf.AttrByteSize).(int64); size != st.Size() {
		return false
	}
	var types []dwarf.Offset
	for i := 0; ; {
		kid, err := r.Next()
		if err != nil || kid == nil || kid.Tag == 0 {
			break
		}
		if kid.Tag == dwarf.TagMember {
			name, _ := kid.Val(dwarf.AttrName).(string)
			if i >= len(st.Field) || st.Field[i].Name != name {
				return false
			}
			typ, _ := kid.Val(dwarf.AttrType).(dwarf.Offset)
			types = append(types, typ)
			i++
		}
		if kid.Children {
			r.SkipChildren()
		}
	}
	if len(types) != len(st.Field) {
		return false
	}
	for i, f := range st.Field {
		if at, ok := f.Type.(*dwarf.ArrayType); ok && at.Count == 0 && st.Kind != "union" {
			end := st.Size() * 8
			if i+1 < len(st.Field) {
				end = fieldBitOffset(st.Field[i+1])
			}
			if orig, err := b.dwarf.Type(types[i]); err == nil {
				if oa, ok := orig.(*dwarf.ArrayType); ok && oa.Count > 0 && fieldBitOffset(f)+oa.Size()*8 <= end {
					f.Type = orig
				}
			}
		}
		if inner, ok := Underlying(f.Type).(*dwarf.StructType); ok {
			b.fixStructArrays(inner, types[i], depth+1)
		}
	}
	return true
}
