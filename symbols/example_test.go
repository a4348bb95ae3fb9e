package symbols_test

import (
	"debug/dwarf"
	"errors"
	"fmt"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Example shows the questions a tracer asks of an nginx binary: where a
// function's instances start, where their arguments are at entry, how a
// type is laid out and how a member path turns into reads. It needs an
// nginx with debug info, so its output depends on the machine.
func Example() {
	bin, err := symbols.Open("/usr/sbin/nginx", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bin.Close()
	fmt.Println("debug info:", bin.DebugSource) // "embedded", "build-id <path>", "debuglink <path>" or ""
	if !bin.HasDWARF() {
		fmt.Println(symbols.NoDebugInfoHint)
	}

	fns, err := bin.Lookup("ngx_http_finalize_request")
	if err != nil {
		fmt.Println(err) // ErrFunctionNotFound, with the closest names
		return
	}
	for _, fn := range fns {
		fmt.Printf("%s at file offset %#x\n", fn.Symbol, fn.Offset)
		scope, err := bin.NewFunctionScope(fn, false)
		if err != nil {
			fmt.Println(err) // ErrNoDebugInfo without DWARF
			continue
		}
		plan, err := bin.CompileText("r->connection->read->eof", scope)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s: from %+v load %v then read %+v\n", plan.Expr, plan.Root, plan.Loads, plan.Read)
	}

	t, err := bin.Type("ngx_event_t")
	if err != nil {
		fmt.Println(err)
		return
	}
	layout, _ := symbols.Layout(t)
	fmt.Print(layout)
}

// ExampleOpen reads separate debug info: the binary's build id is looked
// up under DebugRoot/.build-id, then its .gnu_debuglink.
func ExampleOpen() {
	bin, err := symbols.Open("/usr/sbin/nginx", &symbols.OpenOptions{DebugRoot: "/usr/lib/debug"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bin.Close()
	fmt.Println(bin.BuildID, bin.PIE, bin.HasDWARF(), bin.DebugSource)
}

// ExampleBinary_Lookup looks a function up by its C name, which returns
// every instance (GCC clones and LTO copies included), or by an exact
// clone symbol, which returns that one.
func ExampleBinary_Lookup() {
	bin, err := symbols.Open("/usr/sbin/nginx", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bin.Close()
	for _, name := range []string{"ngx_http_ssl_handshake", "ngx_http_ssl_handshake.lto_priv.0", "ngx_http_finalize_requst"} {
		fns, err := bin.Lookup(name)
		if errors.Is(err, symbols.ErrFunctionNotFound) {
			fmt.Println(err) // ...; did you mean ngx_http_finalize_request?
			continue
		}
		for _, fn := range fns {
			fmt.Println(fn.Name, fn.Symbol, fn.IsClone(), fn.Exported, fn.Offset)
		}
	}
}

// ExampleBinary_Params lists where each argument of each instance is at
// entry; a clone may have dropped or rewritten some.
func ExampleBinary_Params() {
	bin, err := symbols.Open("/usr/sbin/nginx", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bin.Close()
	fns, err := bin.Lookup("ngx_http_close_request")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, fn := range fns {
		params, err := bin.Params(fn)
		if err != nil {
			fmt.Println(err)
			continue
		}
		for _, p := range params {
			if errors.Is(p.Err, symbols.ErrNoLocation) {
				fmt.Printf("%s: %s: not available (%v)\n", fn.Symbol, p.Name, p.Err)
				continue
			}
			fmt.Printf("%s: %s %s in %v\n", fn.Symbol, p.Type, p.Name, p.Location)
		}
	}
}

// ExampleBinary_CompileText compiles a member path against a function's
// parameters: start from a register, follow pointers, read the last member.
func ExampleBinary_CompileText() {
	bin, err := symbols.Open("/usr/sbin/nginx", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bin.Close()
	fns, err := bin.Lookup("ngx_http_ssl_handshake")
	if err != nil {
		fmt.Println(err)
		return
	}
	scope, err := bin.NewFunctionScope(fns[0], false)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, expr := range []string{"((ngx_connection_t *) rev->data)->number", "rev->eof", "rev.eof", "rev->eoff"} {
		plan, err := bin.CompileText(expr, scope)
		if err != nil {
			// ErrBadExpression ("'.' on ngx_event_t *, which is a pointer: use '->'"),
			// ErrFieldNotFound ("did you mean eof?").
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s: loads %v, read %+v\n", expr, plan.Loads, plan.Read)
	}
}

// ExampleLayout prints a struct the way pahole does, bitfields with their
// byte and bit. The type is built by hand here, as DWARF 5 describes the
// start of nginx's ngx_event_t; Binary.Type returns such types.
func ExampleLayout() {
	uint32T := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 4, Name: "unsigned int"}}}
	intT := &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 4, Name: "int"}}}
	voidp := &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: &dwarf.VoidType{}}
	ev := &dwarf.StructType{
		CommonType: dwarf.CommonType{ByteSize: 16},
		StructName: "ngx_event_s",
		Kind:       "struct",
		Field: []*dwarf.StructField{
			{Name: "data", Type: voidp},
			{Name: "write", Type: uint32T, BitSize: 1, DataBitOffset: 64},
			{Name: "eof", Type: uint32T, BitSize: 1, DataBitOffset: 72},
			{Name: "log_error", Type: uint32T, BitSize: 3, DataBitOffset: 78},
			{Name: "available", Type: intT, ByteOffset: 12},
		},
	}
	text, err := symbols.Layout(ev)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(text)
	// Output:
	// struct ngx_event_s {	/* size 16 */
	// 	void *                           data;	/* byte    0, 8 bytes */
	// 	unsigned int                     write:1;	/* byte    8 bit 0, 1 bits */
	// 	unsigned int                     eof:1;	/* byte    9 bit 0, 1 bits */
	// 	unsigned int                     log_error:3;	/* byte    9 bit 6, 3 bits */
	// 	int                              available;	/* byte   12, 4 bytes */
	// }
}

// ExampleParsePath parses member paths; isType tells a cast from a
// parenthesized expression.
func ExampleParsePath() {
	isType := func(name string) bool { return name == "ngx_connection_t" }
	for _, text := range []string{
		"r->connection->read->eof",
		"((ngx_connection_t *) rev->data)->number",
		"r->headers_out.status",
		"r->connection->",
	} {
		p, err := symbols.ParsePath(text, isType)
		if err != nil {
			fmt.Println(errors.Is(err, symbols.ErrBadExpression), err)
			continue
		}
		fmt.Printf("%T at %d\n", p, p.Pos())
	}
	// Output:
	// *symbols.MemberExpr at 19
	// *symbols.MemberExpr at 32
	// *symbols.MemberExpr at 14
	// true "r->connection->": expected a member name
	//   r->connection->
	//                  ^
}

// ExampleBaseName strips the suffixes GCC gives clones.
func ExampleBaseName() {
	for _, s := range []string{"ngx_http_ssl_handshake.lto_priv.0", "isra_sum.isra.0", "ngx_inet6_ntop.part.0", "main"} {
		fmt.Println(symbols.BaseName(s))
	}
	// Output:
	// ngx_http_ssl_handshake
	// isra_sum
	// ngx_inet6_ntop
	// main
}

// ExamplePlan_Format decodes what a plan read: here a 3-bit bitfield at
// bit 6 of the bytes read, and an ngx_str_t (length, then the data read).
func ExamplePlan_Format() {
	uint32T := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 4, Name: "unsigned int"}}}
	bits := &symbols.Plan{Type: uint32T, Read: symbols.Read{Kind: symbols.ReadMemory, Size: 2, BitOffset: 6, BitSize: 3}}
	fmt.Println(bits.Format([]byte{0b1100_0000, 0b0000_0001}).Text)

	str := &symbols.Plan{Read: symbols.Read{Kind: symbols.ReadNgxStr, Cap: 8}}
	fmt.Println(str.Format(append([]byte{14, 0, 0, 0, 0, 0, 0, 0}, "GET /ind"...)).Text) // 14 bytes, 8 read
	// Output:
	// 7
	// "GET /ind"...
}
