package script_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// dump renders an expression as an S-expression without positions, so
// that tests compare trees, not offsets.
func dump(x script.Expr) string {
	switch e := x.(type) {
	case nil:
		return "<nil>"
	case *symbols.Ident:
		return e.Name
	case *symbols.MemberExpr:
		op := "."
		if e.Arrow {
			op = "->"
		}
		return fmt.Sprintf("(%s %s %s)", op, dump(e.X), e.Name)
	case *symbols.IndexExpr:
		return fmt.Sprintf("([] %s %d)", dump(e.X), e.N)
	case *symbols.CastExpr:
		return fmt.Sprintf("(cast %q %s)", e.TypeName+" "+strings.Repeat("*", e.Pointers), dump(e.X))
	case *script.IntLit:
		return fmt.Sprint(e.Value)
	case *script.StrLit:
		return fmt.Sprintf("%q", e.Value)
	case *script.BinaryExpr:
		return fmt.Sprintf("(%s %s %s)", e.Op, dump(e.L), dump(e.R))
	case *script.Not:
		return fmt.Sprintf("(! %s)", dump(e.X))
	}
	return fmt.Sprintf("<%T>", x)
}

func dumpArgs(args []script.PrintArg) string {
	var parts []string
	for _, a := range args {
		if a.Name == a.Text {
			parts = append(parts, dump(a.X))
		} else {
			parts = append(parts, a.Name+"="+dump(a.X))
		}
	}
	return strings.Join(parts, ", ")
}

func dumpStmt(s script.Stmt) string {
	switch s := s.(type) {
	case *script.Let:
		return fmt.Sprintf("let %s = %s", s.Name, dump(s.X))
	case *script.Print:
		return fmt.Sprintf("print(%s)", dumpArgs(s.Args))
	case *script.Printf:
		if len(s.Args) == 0 {
			return fmt.Sprintf("printf(%q)", s.Format)
		}
		return fmt.Sprintf("printf(%q, %s)", s.Format, dumpArgs(s.Args))
	case *script.Stack:
		return "stack"
	case *script.Aggregate:
		keys := ""
		if len(s.Keys) > 0 {
			keys = "[" + dumpArgs(s.Keys) + "]"
		}
		arg := ""
		if s.Arg != nil {
			arg = dump(s.Arg)
		}
		return fmt.Sprintf("@%s%s = %s(%s)", s.Map, keys, s.Func, arg)
	}
	return fmt.Sprintf("<%T>", s)
}

func dumpPoint(pt script.ProbePoint) string {
	switch pt.Kind {
	case script.AtEntry:
		return "entry " + pt.Function
	case script.AtReturn:
		return "return " + pt.Function
	case script.AtOffset:
		return fmt.Sprintf("offset %s+%#x", pt.Function, pt.Offset)
	case script.AtLine:
		return fmt.Sprintf("line %s:%d", pt.File, pt.Line)
	}
	return fmt.Sprintf("kind %d", pt.Kind)
}

// dumpScript renders a whole script, one line per define, point, filter
// and statement.
func dumpScript(s *script.Script) string {
	var b strings.Builder
	for _, d := range s.Defines {
		fmt.Fprintf(&b, "define %s = %s\n", d.Name, dump(d.X))
	}
	for _, p := range s.Probes {
		var pts []string
		for _, pt := range p.Points {
			pts = append(pts, dumpPoint(pt))
		}
		fmt.Fprintf(&b, "probe %s\n", strings.Join(pts, ", "))
		if p.Filter != nil {
			fmt.Fprintf(&b, "  filter %s\n", dump(p.Filter))
		}
		for _, st := range p.Body {
			fmt.Fprintf(&b, "  %s\n", dumpStmt(st))
		}
	}
	return b.String()
}

// format prints a parsed script back as source, fully parenthesized:
// parsing the result must give the same tree.
func format(s *script.Script) string {
	var b strings.Builder
	for _, d := range s.Defines {
		fmt.Fprintf(&b, "define %s = %s\n", d.Name, formatExpr(d.X))
	}
	for _, p := range s.Probes {
		var pts []string
		for _, pt := range p.Points {
			pts = append(pts, pt.Text)
		}
		b.WriteString(strings.Join(pts, ", "))
		if p.Filter != nil {
			fmt.Fprintf(&b, " / %s /", formatExpr(p.Filter))
		}
		b.WriteString(" {\n")
		for _, st := range p.Body {
			b.WriteString("\t" + formatStmt(st) + "\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func formatArgs(args []script.PrintArg, named bool) string {
	var parts []string
	for _, a := range args {
		if named && a.Name != a.Text {
			parts = append(parts, a.Name+" = "+a.Text)
		} else {
			parts = append(parts, a.Text)
		}
	}
	return strings.Join(parts, ", ")
}

func formatStmt(s script.Stmt) string {
	switch s := s.(type) {
	case *script.Let:
		return s.Name + " = " + formatExpr(s.X)
	case *script.Print:
		switch {
		case s.Label == "":
			return "print(" + formatArgs(s.Args, true) + ")"
		case len(s.Args) == 0:
			return "print(" + quote(s.Label) + ")"
		}
		return "print(" + quote(s.Label) + ", " + formatArgs(s.Args, true) + ")"
	case *script.Printf:
		if len(s.Args) == 0 {
			return "printf(" + quote(s.Format) + ")"
		}
		return "printf(" + quote(s.Format) + ", " + formatArgs(s.Args, false) + ")"
	case *script.Stack:
		return "stack"
	case *script.Aggregate:
		keys := ""
		if len(s.Keys) > 0 {
			keys = "[" + formatArgs(s.Keys, false) + "]"
		}
		return fmt.Sprintf("@%s%s = %s(%s)", s.Map, keys, s.Func, s.ArgText)
	}
	return fmt.Sprintf("<%T>", s)
}

func formatExpr(x script.Expr) string {
	switch e := x.(type) {
	case *symbols.Ident:
		return e.Name
	case *symbols.MemberExpr:
		op := "."
		if e.Arrow {
			op = "->"
		}
		return operand(e.X) + op + e.Name
	case *symbols.IndexExpr:
		// An index is unsigned in the text; ParseUint wraps it back.
		return fmt.Sprintf("%s[%d]", operand(e.X), uint64(e.N))
	case *symbols.CastExpr:
		stars := strings.Repeat("*", e.Pointers)
		return fmt.Sprintf("((%s %s) %s)", e.TypeName, stars, formatExpr(e.X))
	case *script.IntLit:
		return fmt.Sprint(e.Value)
	case *script.StrLit:
		return quote(e.Value)
	case *script.BinaryExpr:
		return fmt.Sprintf("(%s %s %s)", formatExpr(e.L), e.Op, formatExpr(e.R))
	case *script.Not:
		// Not "!(X)": "!(size_t)" would read as a cast.
		return "!" + formatExpr(e.X)
	}
	return fmt.Sprintf("<%T>", x)
}

// operand formats the X of x->m and x[n]: a literal or !x needs
// parentheses there ("-1->m" is not a member of -1).
func operand(x script.Expr) string {
	switch x.(type) {
	case *script.IntLit, *script.StrLit, *script.Not:
		return "(" + formatExpr(x) + ")"
	}
	return formatExpr(x)
}

// quote writes a string literal with the escapes the language knows.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// checkErrorList asserts what every parse or compile error must have: a
// position in a file of the script, a message, a sentinel, and a
// rendering that starts with file:line:col.
func checkErrorList(t testing.TB, err error, files map[string]string) {
	t.Helper()
	var list script.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, not an ErrorList: %v", err, err)
	}
	if len(list) == 0 {
		t.Fatalf("empty ErrorList returned as an error")
	}
	for _, e := range list {
		checkError(t, e, files)
	}
}

func checkError(t testing.TB, e *script.Error, files map[string]string) {
	t.Helper()
	p := e.Pos
	if p.File == "" || p.Line < 1 || p.Col < 1 {
		t.Fatalf("error without a position: %+v: %v", p, e)
	}
	if e.Msg == "" {
		t.Fatalf("error without a message at %v", p)
	}
	if e.Err == nil || !(errors.Is(e, script.ErrSyntax) || errors.Is(e, script.ErrResolve) || errors.Is(e, script.ErrInclude)) {
		t.Fatalf("error %q has no sentinel (%v)", e.Msg, e.Err)
	}
	if src, ok := files[p.File]; ok {
		lines := strings.Split(src, "\n")
		if p.Line > len(lines) {
			t.Fatalf("error at line %d of %s, which has %d lines: %v", p.Line, p.File, len(lines), e)
		}
		if lines[p.Line-1] != p.LineText {
			t.Fatalf("error LineText %q, but line %d is %q", p.LineText, p.Line, lines[p.Line-1])
		}
		if p.Col > len(p.LineText)+1 {
			t.Fatalf("error column %d past the end of line %q", p.Col, p.LineText)
		}
	}
	want := fmt.Sprintf("%s:%d:%d: ", p.File, p.Line, p.Col)
	if !strings.HasPrefix(e.Error(), want) {
		t.Fatalf("Error() = %q, want it to start with %q", e.Error(), want)
	}
}

// nginx opens a test build once per variant for the whole test binary.
// Without the build the test is skipped, or fails when CI=true.
func nginx(t testing.TB, variant string) (*symbols.Binary, nginxtest.Install) {
	t.Helper()
	inst := nginxtest.Build(t, variant)
	binsMu.Lock()
	defer binsMu.Unlock()
	if b, ok := bins[variant]; ok {
		return b, inst
	}
	b, err := symbols.Open(inst.Binary, nil)
	if err != nil {
		t.Fatalf("open %s: %v", inst.Binary, err)
	}
	bins[variant] = b
	return b, inst
}

var (
	binsMu sync.Mutex
	bins   = map[string]*symbols.Binary{}
)

// variants are the two test builds every check test runs against.
var variants = []string{nginxtest.VariantO2, nginxtest.VariantLTO}

// checkFormats asserts that every probe that is not a watch's has an
// EventFormat with one entry per value it reads.
func checkFormats(t *testing.T, prog *script.Program) {
	t.Helper()
	watched := map[*probes.Probe]bool{}
	for _, w := range prog.Watches {
		for _, p := range w.Probes {
			watched[p] = true
		}
	}
	for _, p := range prog.Probes {
		f := prog.Format(p)
		switch {
		case watched[p] && f != nil:
			t.Errorf("watch probe %s has an event format", p.Name)
		case !watched[p] && f == nil:
			t.Fatalf("probe %s has no event format", p.Name)
		case f != nil && len(f.Values) != len(p.Values):
			t.Fatalf("probe %s: %d values but %d value formats", p.Name, len(p.Values), len(f.Values))
		}
	}
}
