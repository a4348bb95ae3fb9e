// Package output prints events as compact text blocks or as JSON lines.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/probeset"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
)

// Clock converts CLOCK_MONOTONIC nanoseconds to wall time.
type Clock struct {
	wallAtBoot time.Time
}

// NewClock anchors monotonic time to the wall clock now.
func NewClock(monoNow time.Duration) Clock {
	return Clock{wallAtBoot: time.Now().Add(-monoNow)}
}

// Wall converts a BPF timestamp.
func (c Clock) Wall(ns uint64) time.Time { return c.wallAtBoot.Add(time.Duration(ns)) }

// Printer writes events.
type Printer struct {
	W     io.Writer
	JSON  bool
	Clock Clock
}

// JSONValue is one value in a JSON event. Keys are stable; see README.
type JSONValue struct {
	Name     string `json:"name"`
	Expr     string `json:"expr"`
	Value    any    `json:"value"`
	Readable bool   `json:"readable"`
	Why      string `json:"why,omitempty"`
	Role     string `json:"role,omitempty"`
}

// JSONEvent is one event in JSON output.
type JSONEvent struct {
	Time     string        `json:"time"`
	PID      uint32        `json:"pid"`
	TID      uint32        `json:"tid"`
	Probe    string        `json:"probe"`
	Function string        `json:"function"`
	Values   []JSONValue   `json:"values"`
	Messages []string      `json:"messages,omitempty"`
	Stack    *stacks.Stack `json:"stack,omitempty"`
}

// Print writes one event described by spec, with its unwound stack when
// the probe captured one.
func (p *Printer) Print(ev probes.Event, spec *probeset.Spec, stack *stacks.Stack) error {
	if p.JSON {
		return p.printJSON(ev, spec, stack)
	}
	return p.printText(ev, spec, stack)
}

func valueSpec(spec *probeset.Spec, i int, v probes.Value) probeset.Value {
	if spec != nil && i < len(spec.Values) {
		return spec.Values[i]
	}
	return probeset.Value{Name: v.Expr, Expr: v.Expr}
}

func display(vs probeset.Value, v probes.Value) string {
	if !v.Readable {
		return "?"
	}
	switch vs.Display {
	case probeset.Role:
		return role(v)
	case probeset.Connection:
		return "*" + v.Text
	}
	return v.Text
}

func role(v probes.Value) string {
	if s, ok := v.JSON.(string); ok && s != "0x0" {
		return "client"
	}
	return "upstream"
}

func (p *Printer) printJSON(ev probes.Event, spec *probeset.Spec, stack *stacks.Stack) error {
	out := JSONEvent{
		Time:     p.Clock.Wall(ev.TimeNS).Format(time.RFC3339Nano),
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe.Name,
		Function: ev.Probe.Function.Symbol,
		Values:   []JSONValue{},
		Stack:    stack,
	}
	for i, v := range ev.Values {
		vs := valueSpec(spec, i, v)
		if vs.Hidden {
			continue
		}
		jv := JSONValue{Name: vs.Name, Expr: v.Expr, Value: v.JSON, Readable: v.Readable, Why: v.Why}
		if vs.Display == probeset.Role && v.Readable {
			jv.Value, jv.Role = role(v), role(v)
		}
		out.Values = append(out.Values, jv)
	}
	if spec != nil {
		for _, m := range spec.Messages {
			out.Messages = append(out.Messages, FormatMessage(m, ev.Values))
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.W, "%s\n", b)
	return err
}

// printText writes a header line, then one line per group of values.
// A group whose values are all unreadable (no upstream yet, say) is shown
// as "-" rather than as a row of question marks.
func (p *Printer) printText(ev probes.Event, spec *probeset.Spec, stack *stacks.Stack) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s pid %d", p.Clock.Wall(ev.TimeNS).Format("15:04:05.000000"), ev.Probe.Name, ev.PID)
	if ev.TID != ev.PID {
		fmt.Fprintf(&b, " tid %d", ev.TID)
	}
	if ev.Probe.Function.IsClone() {
		fmt.Fprintf(&b, " (%s)", ev.Probe.Function.Symbol)
	}
	b.WriteByte('\n')
	var groups []string
	lines := map[string][]string{}
	readable := map[string]bool{}
	for i, v := range ev.Values {
		vs := valueSpec(spec, i, v)
		if vs.Hidden {
			continue
		}
		g := vs.Group
		if _, ok := lines[g]; !ok {
			groups = append(groups, g)
		}
		lines[g] = append(lines[g], fmt.Sprintf("%s=%s", vs.Name, display(vs, v)))
		readable[g] = readable[g] || v.Readable
	}
	// Sub-groups ("client read") print under their parent's line when
	// the parent is unreadable as a whole.
	for _, g := range groups {
		if !readable[g] {
			if parent, _, ok := strings.Cut(g, " "); ok && !readable[parent] {
				continue
			}
			fmt.Fprintf(&b, "  %-16s -\n", label(g))
			continue
		}
		fmt.Fprintf(&b, "  %-16s %s\n", label(g), strings.Join(lines[g], " "))
	}
	if spec != nil {
		for _, m := range spec.Messages {
			msg := strings.TrimSuffix(FormatMessage(m, ev.Values), "\n")
			for _, line := range strings.Split(msg, "\n") {
				fmt.Fprintf(&b, "  %s\n", line)
			}
		}
	}
	if stack != nil {
		writeStack(&b, stack)
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}

// writeStack prints frames as the incident notes do: module address,
// symbol+offset, then file:line, or the module for code without DWARF.
func writeStack(b *strings.Builder, st *stacks.Stack) {
	b.WriteString("  stack:\n")
	for _, f := range st.Frames {
		name := f.Symbol
		switch {
		case name == "":
			name = "??"
		case f.Inlined:
			name += " (inlined)"
		default:
			name = fmt.Sprintf("%s+%#x", name, f.Offset)
		}
		where := f.Module
		if f.File != "" {
			where = fmt.Sprintf("%s:%d", f.File, f.Line)
		}
		fmt.Fprintf(b, "    %8x: %s (%s)\n", f.Address, name, where)
	}
	if st.Truncated {
		fmt.Fprintf(b, "    ... truncated: %s\n", st.Reason)
	}
	for _, n := range st.Notes {
		fmt.Fprintf(b, "    note: %s\n", n)
	}
}

// FormatMessage renders a printf with the values it refers to. An
// unreadable value prints as ?.
func FormatMessage(m probeset.Message, values []probes.Value) string {
	var b strings.Builder
	f := m.Format
	arg := 0
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.WriteByte(f[i])
			continue
		}
		j := i + 1
		for j < len(f) && strings.IndexByte("-0123456789l", f[j]) >= 0 {
			j++
		}
		if j >= len(f) {
			b.WriteString(f[i:])
			break
		}
		flags := strings.ReplaceAll(f[i+1:j], "l", "")
		verb := f[j]
		i = j
		if verb == '%' {
			b.WriteByte('%')
			continue
		}
		if arg >= len(m.Args) || m.Args[arg] >= len(values) {
			b.WriteString("%!" + string(verb) + "(missing)")
			continue
		}
		v := values[m.Args[arg]]
		arg++
		if !v.Readable {
			b.WriteString("?")
			continue
		}
		switch verb {
		case 'd', 'i', 'u':
			fmt.Fprintf(&b, "%"+flags+"v", v.JSON)
		case 'x', 'X':
			switch n := v.JSON.(type) {
			case int64:
				fmt.Fprintf(&b, "%"+flags+string(verb), uint64(n))
			case uint64:
				fmt.Fprintf(&b, "%"+flags+string(verb), n)
			default:
				b.WriteString(v.Text)
			}
		case 'c':
			if n, ok := v.JSON.(int64); ok {
				b.WriteByte(byte(n))
			} else if n, ok := v.JSON.(uint64); ok {
				b.WriteByte(byte(n))
			}
		case 's':
			if s, ok := v.JSON.(string); ok {
				fmt.Fprintf(&b, "%"+flags+"s", s)
			} else {
				fmt.Fprintf(&b, "%"+flags+"s", v.Text)
			}
		default: // p
			b.WriteString(v.Text)
		}
	}
	return b.String()
}

func label(g string) string {
	if g == "" {
		return "values:"
	}
	return g + ":"
}
