package symbols_test

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// nginxO2 opens the o2 nginx and the layouts pahole gives for the structs
// the paths below go through.
func nginxO2(t *testing.T) (*symbols.Binary, map[string]map[string]paholeMember) {
	t.Helper()
	requireTools(t, "pahole")
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	b := openBinary(t, inst.Binary)
	layouts := map[string]map[string]paholeMember{}
	for _, tag := range []string{"ngx_http_request_s", "ngx_connection_s", "ngx_event_s", "ngx_http_headers_out_t"} {
		ms := map[string]paholeMember{}
		for _, m := range pahole(t, inst.Binary, tag).Members {
			ms[m.Name] = m
		}
		layouts[tag] = ms
	}
	return b, layouts
}

func scopeOf(t *testing.T, b *symbols.Binary, fn string, atReturn bool) *symbols.FunctionScope {
	t.Helper()
	fns, err := b.Lookup(fn)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.NewFunctionScope(fns[0], atReturn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func paramReg(t *testing.T, s *symbols.FunctionScope, name string) int {
	t.Helper()
	for _, p := range s.Params {
		if p.Name == name && p.Err == nil && p.Location.Kind == symbols.InRegister {
			return p.Location.Reg
		}
	}
	t.Fatalf("%s: parameter %s is not in a register: %+v", s.Function.Symbol, name, s.Params)
	return -1
}

func TestCompilePlans(t *testing.T) {
	b, lay := nginxO2(t)
	req, conn, ev, hout := lay["ngx_http_request_s"], lay["ngx_connection_s"], lay["ngx_event_s"], lay["ngx_http_headers_out_t"]
	byteOff := func(m paholeMember) int64 { return m.Bit / 8 }
	finalize := scopeOf(t, b, "ngx_http_finalize_request", false)
	handshake := scopeOf(t, b, "ngx_http_ssl_handshake", false)
	rReg := paramReg(t, finalize, "r")
	revReg := paramReg(t, handshake, "rev")

	eof := ev["eof"]
	for _, c := range []struct {
		scope *symbols.FunctionScope
		expr  string
		want  symbols.Plan
	}{
		{finalize, "r->connection->read->eof", symbols.Plan{
			Root:  symbols.Root{Reg: rReg},
			Loads: []int64{byteOff(req["connection"]), byteOff(conn["read"])},
			Read: symbols.Read{Kind: symbols.ReadMemory, Offset: eof.Bit / 8, Size: int((eof.Bit%8 + eof.BitSize + 7) / 8),
				BitOffset: int(eof.Bit % 8), BitSize: int(eof.BitSize)},
		}},
		{finalize, "  r -> connection -> number ", symbols.Plan{
			Root:  symbols.Root{Reg: rReg},
			Loads: []int64{byteOff(req["connection"])},
			Read:  symbols.Read{Kind: symbols.ReadMemory, Offset: byteOff(conn["number"]), Size: int(conn["number"].Size)},
		}},
		{handshake, "((ngx_connection_t *) rev->data)->number", symbols.Plan{
			Root:  symbols.Root{Reg: revReg},
			Loads: []int64{byteOff(ev["data"])},
			Read:  symbols.Read{Kind: symbols.ReadMemory, Offset: byteOff(conn["number"]), Size: int(conn["number"].Size)},
		}},
		{handshake, "((struct ngx_connection_s *) rev->data)->log_error", symbols.Plan{
			Root:  symbols.Root{Reg: revReg},
			Loads: []int64{byteOff(ev["data"])},
			Read: symbols.Read{Kind: symbols.ReadMemory, Offset: conn["log_error"].Bit / 8, Size: int((conn["log_error"].Bit%8 + conn["log_error"].BitSize + 7) / 8),
				BitOffset: int(conn["log_error"].Bit % 8), BitSize: int(conn["log_error"].BitSize)},
		}},
		{finalize, "r->headers_out.status", symbols.Plan{
			Root: symbols.Root{Reg: rReg},
			Read: symbols.Read{Kind: symbols.ReadMemory, Offset: byteOff(req["headers_out"]) + byteOff(hout["status"]), Size: int(hout["status"].Size)},
		}},
		{finalize, "r->request_line", symbols.Plan{
			Root: symbols.Root{Reg: rReg},
			Read: symbols.Read{Kind: symbols.ReadNgxStr, Offset: byteOff(req["request_line"]), Cap: symbols.StringCap},
		}},
		{finalize, "r->connection->sockaddr", symbols.Plan{
			Root:  symbols.Root{Reg: rReg},
			Loads: []int64{byteOff(req["connection"]), byteOff(conn["sockaddr"])},
			Read:  symbols.Read{Kind: symbols.ReadMemory, Size: 28},
		}},
		{finalize, "r->lowcase_header", symbols.Plan{
			Root: symbols.Root{Reg: rReg},
			Read: symbols.Read{Kind: symbols.ReadMemory, Offset: byteOff(req["lowcase_header"]), Size: int(req["lowcase_header"].Size)},
		}},
		{finalize, "r->lowcase_header[3]", symbols.Plan{
			Root: symbols.Root{Reg: rReg},
			Read: symbols.Read{Kind: symbols.ReadMemory, Offset: byteOff(req["lowcase_header"]) + 3, Size: 1},
		}},
		{finalize, "r->uri.data", symbols.Plan{
			Root:  symbols.Root{Reg: rReg},
			Loads: []int64{byteOff(req["uri"]) + 8},
			Read:  symbols.Read{Kind: symbols.ReadCString, Cap: symbols.StringCap},
		}},
		{finalize, "rc", symbols.Plan{
			Root: symbols.Root{Reg: paramReg(t, finalize, "rc")},
			Read: symbols.Read{Kind: symbols.ReadValue, Size: 8},
		}},
	} {
		t.Run(c.expr, func(t *testing.T) {
			p, err := b.CompileText(c.expr, c.scope)
			if err != nil {
				t.Fatalf("CompileText(%q): %v", c.expr, err)
			}
			if p.Root != c.want.Root || !slices.Equal(p.Loads, c.want.Loads) || p.Read != c.want.Read {
				t.Fatalf("CompileText(%q) = root %+v loads %v read %+v\nwant root %+v loads %v read %+v",
					c.expr, p.Root, p.Loads, p.Read, c.want.Root, c.want.Loads, c.want.Read)
			}
			if p.Expr != c.expr || p.Type == nil {
				t.Errorf("plan Expr %q, Type %v", p.Expr, p.Type)
			}
		})
	}

	// The plan for eof agrees with Members too (pahole and Members are
	// compared in layout_test.go; this ties the plan to the same numbers).
	evType, err := b.Type("ngx_event_t")
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := symbols.Members(evType)
	for _, m := range ms {
		if m.Name == "eof" && (m.BitOffset != eof.Bit || m.BitSize != eof.BitSize) {
			t.Errorf("Members: eof at bit %d, %d bits; pahole: %d, %d", m.BitOffset, m.BitSize, eof.Bit, eof.BitSize)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	b, _ := nginxO2(t)
	finalize := scopeOf(t, b, "ngx_http_finalize_request", false)
	handshake := scopeOf(t, b, "ngx_http_ssl_handshake", false)
	for _, c := range []struct {
		scope    *symbols.FunctionScope
		expr     string
		sentinel error
		contains []string
	}{
		{finalize, "r->conection->number", symbols.ErrFieldNotFound, []string{`"conection"`, "did you mean connection"}},
		{finalize, "r->connection->read->eoff", symbols.ErrFieldNotFound, []string{"did you mean eof"}},
		{finalize, "r.connection", symbols.ErrBadExpression, []string{"which is a pointer: use '->'"}},
		{finalize, "r->headers_out->status", symbols.ErrBadExpression, []string{"which is not a pointer: use '.'"}},
		{finalize, "rc->x", symbols.ErrBadExpression, []string{"not a pointer"}},
		{finalize, "r->connection->read->eof->x", symbols.ErrBadExpression, []string{"not a pointer"}},
		{finalize, "req->connection", symbols.ErrNoParam, []string{`"req"`, "r"}},
		{finalize, "$retval", symbols.ErrBadExpression, []string{"return probe"}},
		{finalize, "r->headers_out", symbols.ErrBadExpression, []string{"name one of its members"}},
		{finalize, "r->connection->", symbols.ErrBadExpression, []string{"expected a member name"}},
		{finalize, "r->connection)", symbols.ErrBadExpression, []string{"unexpected"}},
		{finalize, "r[", symbols.ErrBadExpression, []string{"constant index"}},
		{handshake, "((ngx_conection_t *) rev->data)->number", symbols.ErrTypeNotFound, []string{"ngx_connection_t"}},
	} {
		t.Run(c.expr, func(t *testing.T) {
			p, err := b.CompileText(c.expr, c.scope)
			if err == nil {
				t.Fatalf("CompileText(%q) = %+v, want an error", c.expr, p)
			}
			if !errors.Is(err, c.sentinel) {
				t.Errorf("CompileText(%q): %v\nwant errors.Is %v", c.expr, err, c.sentinel)
			}
			for _, s := range c.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("CompileText(%q): error does not mention %q:\n%v", c.expr, s, err)
				}
			}
			var pe *symbols.PathError
			if errors.As(err, &pe) && (pe.At < 0 || pe.At > len(c.expr)) {
				t.Errorf("PathError.At %d outside %q", pe.At, c.expr)
			}
		})
	}

	_, err := b.Lookup("ngx_http_finalize_requst")
	if !errors.Is(err, symbols.ErrFunctionNotFound) || !strings.Contains(err.Error(), "ngx_http_finalize_request") {
		t.Errorf("Lookup(ngx_http_finalize_requst): %v; want ErrFunctionNotFound suggesting ngx_http_finalize_request", err)
	}
	var nf *symbols.NotFoundError
	if errors.As(err, &nf) && !slices.Contains(nf.Closest, "ngx_http_finalize_request") {
		t.Errorf("Closest = %v", nf.Closest)
	}
	_, err = b.Type("ngx_conection_t")
	if !errors.Is(err, symbols.ErrTypeNotFound) || !strings.Contains(err.Error(), "ngx_connection_t") {
		t.Errorf("Type(ngx_conection_t): %v; want ErrTypeNotFound suggesting ngx_connection_t", err)
	}
	// In a return probe $retval is the return value, in rax.
	ret := scopeOf(t, b, "ngx_http_finalize_request", true)
	if _, err := b.CompileText("$retval", ret); err != nil {
		t.Errorf("$retval of a void function: %v", err)
	}
	recv := scopeOf(t, b, "ngx_unix_recv", true)
	p, err := b.CompileText("$retval", recv)
	if err != nil || p.Root != (symbols.Root{Reg: symbols.RegRAX, Return: true}) || p.Read.Kind != symbols.ReadValue {
		t.Errorf("$retval of ngx_unix_recv: %+v, %v", p, err)
	}
}

// TestParsePath checks the parser's trees without a binary.
func TestParsePath(t *testing.T) {
	isType := func(s string) bool { return s == "ngx_connection_t" }
	for _, c := range []struct {
		text string
		want string // a rendering of the tree
	}{
		{"r", "r"},
		{"r->connection->read->eof", "r->connection->read->eof"},
		{"r->headers_out.status", "r->headers_out.status"},
		{"a[2].b", "a[2].b"},
		{"(r)->x", "r->x"},
		{"((ngx_connection_t *) rev->data)->number", "(ngx_connection_t*)(rev->data)->number"},
		{"(ngx_connection_t) x", "(ngx_connection_t)(x)"},
		{"(struct foo **) p", "(struct foo**)(p)"},
		{"$retval", "$retval"},
	} {
		p, err := symbols.ParsePath(c.text, isType)
		if err != nil {
			t.Errorf("ParsePath(%q): %v", c.text, err)
			continue
		}
		if got := render(p); got != c.want {
			t.Errorf("ParsePath(%q) = %s, want %s", c.text, got, c.want)
		}
	}
	for _, text := range []string{"", "->x", "r->", "r.", "r[x]", "r[1", "(r", "(foo) x", "r->x y", "1r", "r-x"} {
		if p, err := symbols.ParsePath(text, isType); err == nil {
			t.Errorf("ParsePath(%q) = %s, want an error", text, render(p))
		} else if !errors.Is(err, symbols.ErrBadExpression) {
			t.Errorf("ParsePath(%q): %v, want ErrBadExpression", text, err)
		}
	}
}

func render(p symbols.Path) string {
	switch e := p.(type) {
	case *symbols.Ident:
		return e.Name
	case *symbols.MemberExpr:
		op := "."
		if e.Arrow {
			op = "->"
		}
		return render(e.X) + op + e.Name
	case *symbols.IndexExpr:
		return render(e.X) + "[" + itoa(e.N) + "]"
	case *symbols.CastExpr:
		return "(" + e.TypeName + strings.Repeat("*", e.Pointers) + ")(" + render(e.X) + ")"
	}
	return "?"
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}

// parsePathSeeds seed FuzzParsePath, and FuzzPlan on a real binary.
var parsePathSeeds = []string{
	"r->connection->read->eof",
	"((ngx_connection_t *) rev->data)->number",
	"r->headers_out.status",
	"(struct ngx_connection_s **) c[3]",
	"a[12].b->c",
	"$retval",
	"((((x))))",
	"(ngx_connection_t) (",
	"r->[",
	" \t",
}

func FuzzParsePath(f *testing.F) {
	for _, s := range parsePathSeeds {
		f.Add(s)
	}
	isType := func(s string) bool { return s == "ngx_connection_t" || strings.HasPrefix(s, "struct ") }
	f.Fuzz(func(t *testing.T, text string) {
		p, err := symbols.ParsePath(text, isType)
		if err != nil {
			var pe *symbols.PathError
			if !errors.As(err, &pe) {
				t.Fatalf("ParsePath(%q): %T %v, want a *PathError", text, err, err)
			}
			if pe.At < 0 || pe.At > len(text) {
				t.Fatalf("ParsePath(%q): error at %d, outside the text", text, pe.At)
			}
			_ = err.Error() // renders the caret line
			if !errors.Is(err, symbols.ErrBadExpression) {
				t.Fatalf("ParsePath(%q): %v is not ErrBadExpression", text, err)
			}
			return
		}
		if p == nil {
			t.Fatalf("ParsePath(%q) = nil, nil", text)
		}
		var walk func(symbols.Path)
		walk = func(p symbols.Path) {
			if p.Pos() < 0 || p.Pos() > len(text) {
				t.Fatalf("ParsePath(%q): node %T at %d, outside the text", text, p, p.Pos())
			}
			switch e := p.(type) {
			case *symbols.Ident:
				if e.Name == "" {
					t.Fatalf("ParsePath(%q): empty identifier", text)
				}
			case *symbols.MemberExpr:
				if e.Name == "" {
					t.Fatalf("ParsePath(%q): empty member name", text)
				}
				walk(e.X)
			case *symbols.IndexExpr:
				if e.N < 0 {
					t.Fatalf("ParsePath(%q): negative index", text)
				}
				walk(e.X)
			case *symbols.CastExpr:
				walk(e.X)
			}
		}
		walk(p)
	})
}

// pointerScope gives one name, a pointer to a struct, in a register: the
// simplest Scope, for types that no function takes.
type pointerScope struct {
	name string
	typ  dwarf.Type
	reg  int
}

func (s pointerScope) Lookup(name string) (dwarf.Type, symbols.Root, error) {
	if name != s.name {
		return nil, symbols.Root{}, fmt.Errorf("%w: %s", symbols.ErrNoParam, name)
	}
	return &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: s.typ}, symbols.Root{Reg: s.reg}, nil
}

// TestCompileFixtureBitfields compiles p->member for every member pahole
// lists in the layout fixture's structs and checks the read against
// pahole; for bitfields it also stores a value at pahole's position and
// checks that the plan's Format decodes it.
func TestCompileFixtureBitfields(t *testing.T) {
	requireTools(t, "gcc", "pahole")
	signed := map[string]bool{"sneg": true, "sc": true, "sll": true}
	for _, v := range layoutVariants {
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "layout.c", v.flags...)
			b := openBinary(t, bin)
			for _, tag := range []string{"bits", "packed_bits", "arr_then_bits", "nested"} {
				typ, err := b.Type("struct " + tag)
				if err != nil {
					t.Fatal(err)
				}
				scope := pointerScope{"p", typ, symbols.RegRDI}
				for _, m := range pahole(t, bin, tag).Members {
					expr := "p->" + m.Name
					p, err := b.CompileText(expr, scope)
					if err != nil {
						// Whole structs and arrays of non-chars are fine
						// to refuse; scalars and bitfields are not.
						msg := err.Error()
						if m.BitSize > 0 || !errors.Is(err, symbols.ErrBadExpression) ||
							!strings.Contains(msg, "name one of its members") && !strings.Contains(msg, "is an array") {
							t.Errorf("%s: %s: %v", tag, expr, err)
						}
						continue
					}
					if len(p.Loads) != 0 || p.Root != (symbols.Root{Reg: symbols.RegRDI}) {
						t.Errorf("%s: %s: root %+v loads %v", tag, expr, p.Root, p.Loads)
					}
					if p.Read.Kind != symbols.ReadMemory && p.Read.Kind != symbols.ReadCString {
						continue
					}
					if p.Read.Kind == symbols.ReadCString {
						continue // a char pointer: one more load
					}
					wantSize := int(m.Size)
					if m.BitSize > 0 {
						wantSize = int((m.Bit%8 + m.BitSize + 7) / 8)
					}
					if strings.Contains(m.Line, "char ") && strings.Contains(m.Line, "[") {
						// char arrays: up to StringCap, at least a byte
						// (a flexible array has no size).
						wantSize = max(min(wantSize, symbols.StringCap), 1)
					}
					got := [4]int64{p.Read.Offset, int64(p.Read.BitOffset), int64(p.Read.BitSize), int64(p.Read.Size)}
					want := [4]int64{m.Bit / 8, m.Bit % 8, m.BitSize, int64(wantSize)}
					if got != want {
						t.Errorf("%s: %s: read offset %d bit %d, %d bits, %d bytes; pahole: offset %d bit %d, %d bits, %d bytes (%s)",
							tag, expr, got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3], m.Line)
						continue
					}
					if m.BitSize == 0 || strings.HasPrefix(m.Line, "enum") {
						continue
					}
					// Round trip: a value at pahole's bits, surrounded by ones.
					for _, val := range []int64{1, (1 << (m.BitSize - 1)) - 1, -1, -3} {
						if val < 0 && !signed[m.Name] {
							continue
						}
						mem := make([]byte, 256)
						for i := range mem {
							mem[i] = 0xff
						}
						for i := int64(0); i < m.BitSize; i++ {
							bit := m.Bit + i
							if val>>min(i, 62)&1 == 0 {
								mem[bit/8] &^= 1 << (bit % 8)
							}
						}
						raw := mem[p.Read.Offset : p.Read.Offset+int64(p.Read.Size)]
						if got := p.Format(raw).Text; got != fmt.Sprint(val) {
							t.Errorf("%s: %s = %d stored at bit %d: Format says %s", tag, expr, val, m.Bit, got)
						}
					}
				}
			}
		})
	}
}

// TestCompileArrayBeforeBitfield compiles through a parameter's pointer,
// on a Binary no other test has used (so no earlier Type call has touched
// the struct): an array followed by a bitfield keeps its length.
func TestCompileArrayBeforeBitfield(t *testing.T) {
	requireTools(t, "gcc", "pahole")
	for _, v := range layoutVariants {
		t.Run(v.name, func(t *testing.T) {
			bin := buildFixture(t, "layout.c", v.flags...)
			b, err := symbols.Open(bin, &symbols.OpenOptions{DebugRoot: emptyDebugRoot()})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			scope := scopeOf(t, b, "use_types", false)
			want := map[string]paholeMember{}
			for _, m := range pahole(t, bin, "arr_then_bits").Members {
				want[m.Name] = m
			}
			for _, name := range []string{"tag", "code", "label"} {
				p, err := b.CompileText("a->"+name, scope)
				if err != nil {
					t.Fatal(err)
				}
				if m := want[name]; p.Read.Offset != m.Bit/8 || int64(p.Read.Size) != m.Size {
					t.Errorf("a->%s: read %d bytes at %d; pahole: %d bytes at %d", name, p.Read.Size, p.Read.Offset, m.Size, m.Bit/8)
				}
			}
		})
	}
}
