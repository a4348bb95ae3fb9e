package probeset

import (
	_ "embed"
	"fmt"
	"strings"
)

// Default is the text of the default probe set (default.ngxp).
//
//go:embed default.ngxp
var Default string

// DefaultName names the default set in error positions.
const DefaultName = "default.ngxp"

// closeFunctions are where nginx closes connections, outermost first.
var closeFunctions = []string{"ngx_http_close_connection", "ngx_close_connection"}

// CloseStacks is a probe set on the functions where nginx closes
// connections, with each connection's flags and the stack that led
// there; has says which of them the binary has.
func CloseStacks(has func(function string) bool) string {
	var b strings.Builder
	for _, fn := range closeFunctions {
		if !has(fn) {
			continue
		}
		fmt.Fprintf(&b, `%s {
	print("close", conn = c->number, role = c->listening)
	print("close read", eof = c->read->eof, timedout = c->read->timedout, error = c->read->error)
	print("close write", eof = c->write->eof, timedout = c->write->timedout, error = c->write->error)
	print("close conn", error = c->error, timedout = c->timedout)
	stack
}
`, fn)
	}
	return b.String()
}

// FlagSyntax is the form of a --probe flag.
const FlagSyntax = "FUNCTION[%return][:EXPR,EXPR...]"

// FromFlag turns --probe FUNCTION[%return][:EXPR,EXPR...] into the
// script it stands for: FUNCTION { print(EXPR, ...) }. The word stack
// (or ustack, as in bpftrace) among the expressions adds a stack.
func FromFlag(text string) (string, error) {
	head, exprs, _ := strings.Cut(text, ":")
	head = strings.TrimSpace(head)
	function := strings.TrimSuffix(head, "%return")
	if function == "" || strings.ContainsAny(function, " (){}/\n") {
		return "", fmt.Errorf("--probe %q: want %s", text, FlagSyntax)
	}
	var values []string
	stack := false
	for _, e := range strings.Split(exprs, ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "stack", "ustack":
			stack = true
		default:
			values = append(values, e)
		}
	}
	var body []string
	if len(values) > 0 {
		body = append(body, "print("+strings.Join(values, ", ")+")")
	}
	if stack {
		body = append(body, "stack")
	}
	return head + " { " + strings.Join(body, "; ") + " }\n", nil
}
