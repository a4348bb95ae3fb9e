package script

import (
	"debug/dwarf"
	"fmt"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// cond compiles a filter into a condition the BPF program evaluates.
func (c *compiler) cond(x Expr, sc *scope) probes.Cond {
	switch e := x.(type) {
	case *BinaryExpr:
		switch e.Op {
		case "&&", "||":
			l, r := c.cond(e.L, sc), c.cond(e.R, sc)
			if l == nil || r == nil {
				return nil
			}
			if e.Op == "&&" {
				return probes.And{L: l, R: r}
			}
			return probes.Or{L: l, R: r}
		}
		return c.compare(e, sc)
	case *Not:
		inner := c.cond(e.X, sc)
		if inner == nil {
			return nil
		}
		return probes.Not{X: inner}
	case *IntLit, *StrLit:
		c.errorf(x.Pos(), ErrResolve, "compare a value with it, e.g. rc == 499", "a literal alone is not a condition")
		return nil
	}
	// A bare value is true when it is not zero (not NULL).
	op, ok := c.operand(x, sc, "")
	if !ok {
		return nil
	}
	if kind := stringKind(op.Plan); kind != "" {
		c.errorf(x.Pos(), ErrResolve, `compare it with a literal, e.g. r->method_name == "GET"`, "%s is a string (%s), not a condition", op.Plan.Expr, kind)
		return nil
	}
	return probes.Compare{Op: "!=", L: op, R: probes.Operand{Const: 0}}
}

// operand compiles an integer literal or a member path. text names x in
// the plan; empty means its position's source.
func (c *compiler) operand(x Expr, sc *scope, text string) (probes.Operand, bool) {
	switch e := x.(type) {
	case *IntLit:
		return probes.Operand{Const: e.Value, Signed: e.Value < 0}, true
	case *StrLit, *BinaryExpr, *Not:
		c.errorf(x.Pos(), ErrResolve, "", "expected a value")
		return probes.Operand{}, false
	}
	if !isPath(x) {
		c.errorf(x.Pos(), ErrResolve, "", "expected a member path")
		return probes.Operand{}, false
	}
	if text == "" {
		text = exprText(x)
	}
	plan, err := sc.bin.Compile(text, x, sc)
	if err != nil {
		c.fail(x.Pos(), err)
		return probes.Operand{}, false
	}
	return probes.Operand{Plan: plan, Signed: signed(plan.Type)}, true
}

// exprText rebuilds an expression's text for names in output.
func exprText(x Expr) string {
	switch e := x.(type) {
	case *symbols.Ident:
		return e.Name
	case *symbols.MemberExpr:
		op := "."
		if e.Arrow {
			op = "->"
		}
		return exprText(e.X) + op + e.Name
	case *symbols.IndexExpr:
		return fmt.Sprintf("%s[%d]", exprText(e.X), e.N)
	case *symbols.CastExpr:
		stars := ""
		for range e.Pointers {
			stars += "*"
		}
		if stars != "" {
			stars = " " + stars
		}
		return fmt.Sprintf("((%s%s) %s)", e.TypeName, stars, exprText(e.X))
	case *IntLit:
		return e.Text
	case *StrLit:
		return fmt.Sprintf("%q", e.Value)
	}
	return "?"
}

func signed(t dwarf.Type) bool {
	switch symbols.Underlying(t).(type) {
	case *dwarf.IntType, *dwarf.CharType:
		return true
	case *dwarf.EnumType:
		return false
	}
	return false
}

// stringKind names the string type a plan reads, "" for numbers.
func stringKind(p *symbols.Plan) string {
	if p == nil {
		return ""
	}
	switch p.Read.Kind {
	case symbols.ReadNgxStr:
		return "ngx_str_t"
	case symbols.ReadCString:
		return "char *"
	case symbols.ReadMemory:
		if a, ok := symbols.Underlying(p.Type).(*dwarf.ArrayType); ok && p.Read.BitSize == 0 {
			if isCharType(a.Type) {
				return "char array"
			}
		}
		if p.Read.Size > 8 {
			return symbols.TypeName(p.Type)
		}
	}
	return ""
}

func isCharType(t dwarf.Type) bool {
	switch u := symbols.Underlying(t).(type) {
	case *dwarf.CharType, *dwarf.UcharType:
		return true
	case *dwarf.IntType:
		return u.ByteSize == 1
	case *dwarf.UintType:
		return u.ByteSize == 1
	}
	return false
}

func (c *compiler) compare(e *BinaryExpr, sc *scope) probes.Cond {
	ls, lIsStr := e.L.(*StrLit)
	rs, rIsStr := e.R.(*StrLit)
	_, lIsInt := e.L.(*IntLit)
	_, rIsInt := e.R.(*IntLit)
	if (lIsStr || lIsInt) && (rIsStr || rIsInt) {
		c.errorf(e.At, ErrResolve, "compare a value read from nginx", "%s compares two literals", e.Op)
		return nil
	}
	// Put the literal on the right.
	if lIsStr || lIsInt {
		e = &BinaryExpr{At: e.At, Op: mirror[e.Op], L: e.R, R: e.L}
		ls, lIsStr, rs, rIsStr = rs, rIsStr, ls, lIsStr
		rIsInt = lIsInt
	}
	_ = ls
	l, ok := c.operand(e.L, sc, "")
	if !ok {
		return nil
	}
	lKind := stringKind(l.Plan)
	switch {
	case rIsStr:
		if lKind == "" {
			c.errorf(e.At, ErrResolve, "compare it with a number, e.g. "+l.Plan.Expr+" == 1", "type mismatch: %s is %s, a number, but %q is a string", l.Plan.Expr, symbols.TypeName(l.Plan.Type), rs.Value)
			return nil
		}
		if e.Op != "==" && e.Op != "!=" {
			c.errorf(e.At, ErrResolve, "", "strings compare with == and != only")
			return nil
		}
		if len(rs.Value) >= 64 {
			c.errorf(rs.At, ErrResolve, "", "a string literal in a filter is at most 63 bytes")
			return nil
		}
		var cond probes.Cond = probes.StringEquals{Plan: l.Plan, Literal: rs.Value}
		if e.Op == "!=" {
			cond = probes.Not{X: cond}
		}
		return cond
	case rIsInt:
		if lKind != "" {
			c.errorf(e.At, ErrResolve, fmt.Sprintf(`compare it with a string literal, e.g. %s == "..."`, l.Plan.Expr), "type mismatch: %s is a string (%s), %s is a number", l.Plan.Expr, lKind, exprText(e.R))
			return nil
		}
		r, _ := c.operand(e.R, sc, "")
		return probes.Compare{Op: e.Op, L: l, R: r}
	}
	// Both sides read from nginx.
	r, ok := c.operand(e.R, sc, "")
	if !ok {
		return nil
	}
	rKind := stringKind(r.Plan)
	if lKind != "" && rKind != "" {
		c.errorf(e.At, ErrResolve, `compare one of them with a string literal instead, e.g. `+l.Plan.Expr+` == "GET"; a literal bounds the read`,
			"comparing two strings (%s %s %s) needs a read loop, which ngxprobe does not generate", l.Plan.Expr, e.Op, r.Plan.Expr)
		return nil
	}
	if lKind != "" || rKind != "" {
		c.errorf(e.At, ErrResolve, "", "type mismatch: %s is %s and %s is %s", l.Plan.Expr, describe(l.Plan), r.Plan.Expr, describe(r.Plan))
		return nil
	}
	return probes.Compare{Op: e.Op, L: l, R: r}
}

func describe(p *symbols.Plan) string {
	if k := stringKind(p); k != "" {
		return "a string (" + k + ")"
	}
	return "a number (" + symbols.TypeName(p.Type) + ")"
}

var mirror = map[string]string{"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
