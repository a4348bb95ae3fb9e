package flips

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupportedExpr: the expression is not a field of a connection.
var ErrUnsupportedExpr = errors.New("unsupported watch expression")

// connType is the watch root: c is the connection.
const connType = "ngx_connection_t"

// Expr is a parsed watch expression: c->read->FIELD, c->write->FIELD or c->FIELD.
type Expr struct {
	Text  string
	Event string // "read", "write", or "" for a field of the connection
	Field string
}

// ParseExpr parses a watch expression rooted at the connection c.
func ParseExpr(text string) (Expr, error) {
	t := strings.TrimSpace(text)
	bad := func(why string) (Expr, error) {
		return Expr{}, fmt.Errorf("%w %q: %s; watch c->read->FIELD, c->write->FIELD or c->FIELD, where c is the connection (ngx_connection_t), e.g. c->read->eof", ErrUnsupportedExpr, text, why)
	}
	rest, ok := strings.CutPrefix(t, "c->")
	if !ok {
		return bad("it must start at the connection c")
	}
	parts := strings.Split(rest, "->")
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " .[]()*") {
			return bad("it must be a chain of member names")
		}
	}
	switch {
	case len(parts) == 1:
		return Expr{Text: t, Field: parts[0]}, nil
	case len(parts) == 2 && (parts[0] == "read" || parts[0] == "write"):
		return Expr{Text: t, Event: parts[0], Field: parts[1]}, nil
	}
	return bad("only the connection's read and write events are followed")
}
