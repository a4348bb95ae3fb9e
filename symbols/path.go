package symbols

import (
	"debug/dwarf"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Path is a parsed C member path: r->connection->read->eof,
// r->headers_out.status, ((ngx_connection_t *) rev->data)->number.
type Path interface {
	Pos() int // byte offset in the source text
}

// Ident names a parameter, a local name, or $retval.
type Ident struct {
	At   int
	Name string
}

// MemberExpr is x->name (Arrow) or x.name. At is the operator's
// position, NameAt the name's: an unknown member is reported there.
type MemberExpr struct {
	At     int
	NameAt int
	X      Path
	Name   string
	Arrow  bool
}

// IndexExpr is x[n].
type IndexExpr struct {
	At int
	X  Path
	N  int64
}

// CastExpr is (type *...) x.
type CastExpr struct {
	At       int
	TypeName string
	Pointers int
	X        Path
}

func (e *Ident) Pos() int      { return e.At }
func (e *MemberExpr) Pos() int { return e.At }
func (e *IndexExpr) Pos() int  { return e.At }
func (e *CastExpr) Pos() int   { return e.At }

// PathError is a syntax or resolution error at a byte offset of the text.
type PathError struct {
	Text string
	At   int
	Msg  string
	Err  error // the sentinel, for errors.Is
}

func (e *PathError) Error() string {
	return fmt.Sprintf("%s: %s\n  %s\n  %s^", strconv.Quote(e.Text), e.Msg, e.Text, strings.Repeat(" ", e.At))
}

func (e *PathError) Unwrap() error { return e.Err }

type pathParser struct {
	text string
	pos  int
}

// ParsePath parses a member path. isType tells casts from parenthesized
// expressions: "(ngx_connection_t *) x" versus "(x)".
func ParsePath(text string, isType func(string) bool) (Path, error) {
	p := &pathParser{text: text}
	e, err := p.unary(isType)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.text) {
		return nil, p.errorf("unexpected %q after the expression", p.text[p.pos:])
	}
	return e, nil
}

func (p *pathParser) errorf(format string, args ...any) error {
	return &PathError{Text: p.text, At: p.pos, Msg: fmt.Sprintf(format, args...), Err: ErrBadExpression}
}

func (p *pathParser) space() {
	for p.pos < len(p.text) && unicode.IsSpace(rune(p.text[p.pos])) {
		p.pos++
	}
}

func (p *pathParser) peek(s string) bool {
	p.space()
	return strings.HasPrefix(p.text[p.pos:], s)
}

func (p *pathParser) ident() (string, bool) {
	p.space()
	start := p.pos
	for p.pos < len(p.text) {
		c := rune(p.text[p.pos])
		if c == '_' || c == '$' || unicode.IsLetter(c) || (p.pos > start && unicode.IsDigit(c)) {
			p.pos++
			continue
		}
		break
	}
	return p.text[start:p.pos], p.pos > start
}

func (p *pathParser) unary(isType func(string) bool) (Path, error) {
	p.space()
	at := p.pos
	if p.peek("(") {
		save := p.pos
		p.pos++
		if name, ptrs, ok := p.typeName(isType); ok {
			return p.castRest(at, name, ptrs, isType)
		}
		p.pos = save
	}
	return p.postfix(isType)
}

// typeName tries "[struct|union|enum] ident *...)" after an opening paren.
func (p *pathParser) typeName(isType func(string) bool) (string, int, bool) {
	save := p.pos
	word, ok := p.ident()
	if !ok {
		p.pos = save
		return "", 0, false
	}
	name := word
	if word == "struct" || word == "union" || word == "enum" {
		tag, ok := p.ident()
		if !ok {
			p.pos = save
			return "", 0, false
		}
		name = word + " " + tag
	}
	ptrs := 0
	for p.peek("*") {
		p.pos++
		ptrs++
	}
	if !p.peek(")") || (ptrs == 0 && !isType(name)) {
		p.pos = save
		return "", 0, false
	}
	p.pos++
	return name, ptrs, true
}

func (p *pathParser) castRest(at int, name string, ptrs int, isType func(string) bool) (Path, error) {
	x, err := p.unary(isType)
	if err != nil {
		return nil, err
	}
	return &CastExpr{At: at, TypeName: name, Pointers: ptrs, X: x}, nil
}

func (p *pathParser) postfix(isType func(string) bool) (Path, error) {
	p.space()
	var x Path
	if p.peek("(") {
		p.pos++
		inner, err := p.unary(isType)
		if err != nil {
			return nil, err
		}
		if !p.peek(")") {
			return nil, p.errorf("expected )")
		}
		p.pos++
		x = inner
	} else {
		at := p.pos
		name, ok := p.ident()
		if !ok {
			if p.pos >= len(p.text) {
				return nil, p.errorf("expected a name, found the end")
			}
			return nil, p.errorf("expected a name, found %q", p.text[p.pos:p.pos+1])
		}
		x = &Ident{At: at, Name: name}
	}
	for {
		p.space()
		at := p.pos
		switch {
		case p.peek("->"), p.peek("."):
			arrow := p.peek("->")
			if arrow {
				p.pos += 2
			} else {
				p.pos++
			}
			p.space()
			nameAt := p.pos
			name, ok := p.ident()
			if !ok {
				return nil, p.errorf("expected a member name")
			}
			x = &MemberExpr{At: at, NameAt: nameAt, X: x, Name: name, Arrow: arrow}
		case p.peek("["):
			p.pos++
			p.space()
			start := p.pos
			for p.pos < len(p.text) && unicode.IsDigit(rune(p.text[p.pos])) {
				p.pos++
			}
			n, err := strconv.ParseInt(p.text[start:p.pos], 10, 64)
			if err != nil {
				return nil, p.errorf("expected a constant index")
			}
			if !p.peek("]") {
				return nil, p.errorf("expected ]")
			}
			p.pos++
			x = &IndexExpr{At: at, X: x, N: n}
		default:
			return x, nil
		}
	}
}

// Root is where a plan's first value comes from.
type Root struct {
	Reg    int   // DWARF register number
	Add    int64 // added to the register
	Const  bool  // the value is Add itself
	Return bool  // the return value (rax at return)
	// Memory: the object is in memory at Reg+Add (a stack argument); only
	// Scope.Lookup returns it, compiled plans never carry it.
	Memory bool
	// Unavailable is set, to the reason, when the value cannot be read
	// where the probe is (an argument optimized out in an inlined copy):
	// the plan reads nothing and reports it unavailable.
	Unavailable string
}

// ReadKind is the final step of a plan.
type ReadKind int

const (
	ReadValue   ReadKind = iota // the value is the base itself
	ReadMemory                  // Size bytes at base+Offset
	ReadCString                 // a NUL-terminated string at base, at most Cap bytes
	ReadNgxStr                  // ngx_str_t at base+Offset: len, data, then Cap bytes of data
)

// Read is the final step of a Plan.
type Read struct {
	Kind      ReadKind
	Offset    int64
	Size      int // bytes read (ReadMemory)
	BitOffset int // within the bytes read
	BitSize   int // 0 unless a bitfield
	Cap       int // string cap
}

// Plan is a compiled expression: start at Root, follow Loads (each reads a
// pointer at base+offset), then perform Read. It runs in BPF unchanged.
type Plan struct {
	Expr  string
	Type  dwarf.Type
	Root  Root
	Loads []int64
	Read  Read
}

// StringCap bounds string reads.
const StringCap = 64

// sockaddrSize covers sockaddr_in6, the largest sockaddr we format.
const sockaddrSize = 28

// Scope resolves the names an expression can start from.
type Scope interface {
	// Lookup returns the type and entry location of a name.
	Lookup(name string) (dwarf.Type, Root, error)
}

// operand is an expression being compiled: either a value held in base
// (rvalue), or an object in memory at base+off.
type operand struct {
	typ    dwarf.Type
	root   Root
	loads  []int64
	lvalue bool
	off    int64
	bitOff int64 // absolute bits from base+off*8 for bitfields
	bits   int64
}

// Compile turns a parsed path into a plan against the binary's types.
func (b *Binary) Compile(text string, path Path, scope Scope) (*Plan, error) {
	op, err := b.compile(text, path, scope)
	if err != nil {
		return nil, err
	}
	return finish(text, path, op)
}

// CompileText parses and compiles in one step.
func (b *Binary) CompileText(text string, scope Scope) (*Plan, error) {
	path, err := ParsePath(text, b.IsType)
	if err != nil {
		return nil, err
	}
	return b.Compile(text, path, scope)
}

// IsType reports whether name is a known type name.
func (b *Binary) IsType(name string) bool {
	ix, err := b.idx()
	if err != nil {
		return false
	}
	return len(b.typeOffsets(ix, name, 0)) > 0
}

func errAt(text string, p Path, sentinel error, format string, args ...any) error {
	return &PathError{Text: text, At: p.Pos(), Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func (b *Binary) compile(text string, path Path, scope Scope) (operand, error) {
	switch e := path.(type) {
	case *Ident:
		t, root, err := scope.Lookup(e.Name)
		if err != nil {
			return operand{}, &PathError{Text: text, At: e.At, Msg: err.Error(), Err: err}
		}
		if root.Memory {
			return operand{typ: t, root: Root{Reg: root.Reg}, lvalue: true, off: root.Add}, nil
		}
		return operand{typ: t, root: root}, nil
	case *CastExpr:
		x, err := b.compile(text, e.X, scope)
		if err != nil {
			return operand{}, err
		}
		t, err := b.Type(e.TypeName)
		if err != nil {
			return operand{}, errAt(text, e, err, "%v", err)
		}
		for range e.Pointers {
			t = &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: t}
		}
		if x.bits > 0 {
			return operand{}, errAt(text, e, ErrBadExpression, "cannot cast a bitfield")
		}
		x.typ = t
		return x, nil
	case *MemberExpr:
		x, err := b.compile(text, e.X, scope)
		if err != nil {
			return operand{}, err
		}
		u := Underlying(x.typ)
		if e.Arrow {
			ptr, ok := u.(*dwarf.PtrType)
			if !ok {
				return operand{}, errAt(text, e, ErrBadExpression, "'->' on %s, which is not a pointer: use '.'", typeName(x.typ))
			}
			x = deref(x)
			x.typ = ptr.Type
		} else if _, ok := u.(*dwarf.PtrType); ok {
			return operand{}, errAt(text, e, ErrBadExpression, "'.' on %s, which is a pointer: use '->'", typeName(x.typ))
		}
		if _, ok := Underlying(x.typ).(*dwarf.StructType); !ok {
			return operand{}, errAt(text, e, ErrBadExpression, "%s is not a struct or union, so it has no member %q", typeName(x.typ), e.Name)
		}
		if !x.lvalue {
			return operand{}, errAt(text, e, ErrBadExpression, "a struct passed in registers cannot be read by member")
		}
		b.fixZeroedArrays(x.typ)
		m, names, ok := member(x.typ, e.Name)
		if !ok {
			err := &NotFoundError{Kind: ErrFieldNotFound, Name: e.Name, Where: typeName(x.typ), Closest: Closest(e.Name, names, 3), All: names}
			at := e.At
			if e.NameAt > e.At {
				at = e.NameAt // the caret goes under the misspelt name
			}
			return operand{}, &PathError{Text: text, At: at, Msg: err.Error(), Err: err}
		}
		x.typ = m.Type
		if m.BitSize > 0 {
			x.off += m.BitOffset / 8
			x.bitOff = m.BitOffset % 8
			x.bits = m.BitSize
		} else {
			x.off += m.BitOffset / 8
		}
		return x, nil
	case *IndexExpr:
		x, err := b.compile(text, e.X, scope)
		if err != nil {
			return operand{}, err
		}
		switch u := Underlying(x.typ).(type) {
		case *dwarf.ArrayType:
			if !x.lvalue {
				return operand{}, errAt(text, e, ErrBadExpression, "array is not in memory")
			}
			x.typ = u.Type
			x.off += e.N * u.Type.Size()
		case *dwarf.PtrType:
			x = deref(x)
			x.typ = u.Type
			x.off += e.N * u.Type.Size()
		default:
			return operand{}, errAt(text, e, ErrBadExpression, "%s cannot be indexed", typeName(x.typ))
		}
		return x, nil
	}
	return operand{}, errAt(text, path, ErrBadExpression, "unsupported expression")
}

// deref turns a pointer operand into the object it points to.
func deref(x operand) operand {
	if x.lvalue {
		x.loads = append(append([]int64(nil), x.loads...), x.off)
	}
	x.lvalue, x.off = true, 0
	return x
}

func finish(text string, path Path, x operand) (*Plan, error) {
	p := &Plan{Expr: text, Type: x.typ, Root: x.root, Loads: x.loads}
	u := Underlying(x.typ)
	if !x.lvalue {
		switch {
		case isCharPointer(u):
			p.Read = Read{Kind: ReadCString, Cap: StringCap}
		case isSockaddrPointer(u):
			p.Read = Read{Kind: ReadMemory, Size: sockaddrSize}
		default:
			p.Read = Read{Kind: ReadValue, Size: 8}
		}
		return p, nil
	}
	if x.bits > 0 {
		nbytes := int((x.bitOff + x.bits + 7) / 8)
		p.Read = Read{Kind: ReadMemory, Offset: x.off, Size: nbytes, BitOffset: int(x.bitOff), BitSize: int(x.bits)}
		return p, nil
	}
	switch t := u.(type) {
	case *dwarf.StructType:
		if isNgxStr(x.typ) {
			p.Read = Read{Kind: ReadNgxStr, Offset: x.off, Cap: StringCap}
			return p, nil
		}
		return nil, errAt(text, path, ErrBadExpression, "%s is a %s; name one of its members", text, typeName(x.typ))
	case *dwarf.ArrayType:
		if isChar(t.Type) {
			n := min(int(t.Size()), StringCap)
			p.Read = Read{Kind: ReadMemory, Offset: x.off, Size: max(n, 1)}
			return p, nil
		}
		return nil, errAt(text, path, ErrBadExpression, "%s is an array; index it", text)
	case *dwarf.PtrType:
		if isCharPointer(u) || isSockaddrPointer(u) {
			p.Loads = append(append([]int64(nil), p.Loads...), x.off)
			p.Read = Read{Kind: ReadCString, Cap: StringCap}
			if isSockaddrPointer(u) {
				p.Read = Read{Kind: ReadMemory, Size: sockaddrSize}
			}
			return p, nil
		}
	}
	size := x.typ.Size()
	if size <= 0 || size > 8 {
		return nil, errAt(text, path, ErrBadExpression, "%s has size %d; only scalars up to 8 bytes, strings and sockaddrs are read", typeName(x.typ), size)
	}
	p.Read = Read{Kind: ReadMemory, Offset: x.off, Size: int(size)}
	return p, nil
}

func isNgxStr(t dwarf.Type) bool {
	for range 8 {
		if td, ok := t.(*dwarf.TypedefType); ok {
			if td.Name == "ngx_str_t" {
				return true
			}
			t = td.Type
			continue
		}
		break
	}
	st, ok := Underlying(t).(*dwarf.StructType)
	return ok && st.StructName == "" && len(st.Field) == 2 && st.Field[0].Name == "len" && st.Field[1].Name == "data"
}

func isChar(t dwarf.Type) bool {
	switch u := Underlying(t).(type) {
	case *dwarf.CharType, *dwarf.UcharType:
		return true
	case *dwarf.IntType:
		return u.ByteSize == 1 && strings.Contains(u.Name, "char")
	case *dwarf.UintType:
		return u.ByteSize == 1 && strings.Contains(u.Name, "char")
	}
	return false
}

func isCharPointer(t dwarf.Type) bool {
	p, ok := Underlying(t).(*dwarf.PtrType)
	return ok && p.Type != nil && isChar(p.Type)
}

func isSockaddrPointer(t dwarf.Type) bool {
	p, ok := Underlying(t).(*dwarf.PtrType)
	if !ok || p.Type == nil {
		return false
	}
	st, ok := Underlying(p.Type).(*dwarf.StructType)
	return ok && st.StructName == "sockaddr"
}
