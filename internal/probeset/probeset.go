// Package probeset describes what to probe and what to read there, and
// resolves that against a binary into attachable probes: every instance
// of every function, each with its own compiled plans.
package probeset

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Value is an expression to read, with a short name and the output line
// (group) it belongs on.
type Value struct {
	Name    string
	Expr    string
	Group   string
	Display Display
	// Hidden values are read for a message, not listed on their own.
	Hidden bool
}

// Message is a printf: a format and the indexes of its values.
type Message struct {
	Format string
	Args   []int
}

// Display changes how a value is shown.
type Display int

const (
	Plain Display = iota
	// Role shows a connection's c->listening as client (set) or upstream (NULL).
	Role
	// Connection shows a number as *N, as nginx's error log does.
	Connection
)

// Spec is one probe: a function at entry or return and its values.
type Spec struct {
	Function string
	Return   bool
	Values   []Value
	// Stack: capture the user stack at each hit.
	Stack bool
	// Messages are printed after the values, in order.
	Messages []Message
	// Label, when set, names the probe in output instead of Name().
	Label string
}

// Name is how the probe is shown: the function, with %return for returns.
func (s Spec) Name() string {
	if s.Label != "" {
		return s.Label
	}
	if s.Return {
		return s.Function + "%return"
	}
	return s.Function
}

// Resolved ties each attachable probe to the spec it came from.
type Resolved struct {
	Probes []*probes.Probe
	Specs  []*Spec // parallel to Probes
}

// ErrResolve wraps every resolution failure.
var ErrResolve = errors.New("cannot resolve probe set")

// Resolve compiles the specs against the binary. All errors are collected,
// so a user sees every misspelt name at once.
func Resolve(bin *symbols.Binary, specs []Spec) (*Resolved, error) {
	out := &Resolved{}
	var errs []string
	for i := range specs {
		spec := &specs[i]
		fns, err := bin.Lookup(spec.Function)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, fn := range fns {
			p := &probes.Probe{Name: spec.Name(), Function: fn, Return: spec.Return, Stack: spec.Stack}
			if len(spec.Values) > 0 {
				scope, err := bin.NewFunctionScope(fn, spec.Return)
				if err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", spec.Name(), err))
					continue
				}
				for _, v := range spec.Values {
					plan, err := bin.CompileText(v.Expr, scope)
					if err != nil {
						errs = append(errs, fmt.Sprintf("%s (instance %s): %v", spec.Name(), fn.Symbol, err))
						continue
					}
					p.Values = append(p.Values, plan)
				}
			}
			out.Probes = append(out.Probes, p)
			out.Specs = append(out.Specs, spec)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrResolve, strings.Join(dedupe(errs), "\n  "))
	}
	return out, nil
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ParseFlag parses --probe FUNCTION[%return][:EXPR,EXPR...]; the word
// stack (or ustack, as in bpftrace) among the expressions adds a stack.
func ParseFlag(text string) (Spec, error) {
	head, exprs, _ := strings.Cut(text, ":")
	head = strings.TrimSpace(head)
	s := Spec{Function: head}
	if f, ok := strings.CutSuffix(head, "%return"); ok {
		s.Function, s.Return = f, true
	}
	if s.Function == "" || strings.ContainsAny(s.Function, " ()") {
		return Spec{}, fmt.Errorf("--probe %q: want FUNCTION[%%return][:EXPR,EXPR...]", text)
	}
	for _, e := range strings.Split(exprs, ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "stack", "ustack":
			s.Stack = true
		default:
			s.Values = append(s.Values, Value{Name: e, Expr: e})
		}
	}
	return s, nil
}
