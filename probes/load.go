package probes

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// VerifierError explains a program the kernel rejected, naming the
// expression that caused it where a bisection can tell.
type VerifierError struct {
	Probe string
	Expr  string
	Log   []string
	Err   error
}

func (e *VerifierError) Error() string {
	where := "the probe itself"
	if e.Expr != "" {
		where = fmt.Sprintf("expression %q", e.Expr)
	}
	tail := e.Log
	if len(tail) > 8 {
		tail = tail[len(tail)-8:]
	}
	return fmt.Sprintf("the kernel verifier rejected the program for %s, caused by %s: %v\nverifier log (last lines):\n  %s",
		e.Probe, where, e.Err, strings.Join(tail, "\n  "))
}

func (e *VerifierError) Unwrap() error { return e.Err }

// load generates and loads the program of p. When the verifier rejects
// it, the error is a *VerifierError that names the culprit value where
// bisect can tell.
func load(p planned, m mapFDs) (*ebpf.Program, error) {
	insns, err := generate(p.program, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.function.Symbol, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         fmt.Sprintf("ngxp_%d", p.probeID),
		Type:         ebpf.Kprobe,
		Instructions: insns,
		License:      "GPL",
	})
	if err == nil {
		return prog, nil
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return nil, fmt.Errorf("load program for %s: %w", p.function.Symbol, err)
	}
	out := &VerifierError{Probe: p.function.Symbol, Log: ve.Log, Err: err}
	out.Expr = bisect(p.program, m)
	return nil, out
}

// bisect names the value that makes the verifier reject p: if the
// program loads without values, it loads each value alone. It returns ""
// when the program without values is rejected too, or no single value is.
func bisect(p program, m mapFDs) string {
	frame := p
	frame.layout = newLayout(nil)
	frame.saveRoots = nil
	if !loads(frame, m) {
		return ""
	}
	for _, s := range p.layout.slots {
		single := p
		single.layout = newLayout([]*symbols.Plan{s.plan})
		single.saveRoots = nil
		if !loads(single, m) {
			return s.plan.Expr
		}
	}
	return ""
}

// loads reports whether the verifier accepts the program.
func loads(p program, m mapFDs) bool {
	insns, err := generate(p, m)
	if err != nil {
		return false
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns, License: "GPL"})
	if err != nil {
		return false
	}
	prog.Close()
	return true
}
