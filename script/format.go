package script

import (
	"strings"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Display says how a printed value is shown.
type Display int

const (
	// Plain shows the value formatted by its C type.
	Plain Display = iota
	// Role shows a connection's c->listening as client (set) or upstream
	// (NULL).
	Role
	// Connection shows a connection number as *N, as the error log does.
	Connection
)

// EventFormat says how a probe's events are shown: a name, a group and a
// display for each value it reads, and its printf messages.
type EventFormat struct {
	// Values is parallel to the probe's values.
	Values   []ValueFormat
	Messages []Message
}

// ValueFormat is how one read value is shown.
type ValueFormat struct {
	Name string
	// Group is the output line the value belongs on: the label of the
	// print that names it (print("client read", ...)), "" otherwise.
	Group   string
	Display Display
	// Hidden values are read for a printf only.
	Hidden bool
}

// displayFor shows connection numbers as *N and c->listening as the
// connection's role.
func displayFor(plan *symbols.Plan) Display {
	e := plan.Expr
	switch {
	case strings.HasSuffix(e, "->number") || strings.HasSuffix(e, ".number") || strings.HasSuffix(e, "log->connection"):
		return Connection
	case strings.HasSuffix(e, "->listening"):
		return Role
	}
	return Plain
}
