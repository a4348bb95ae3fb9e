package symbols

import (
	"debug/dwarf"
	"fmt"
)

// ReturnValueName names the return value in return probes.
const ReturnValueName = "$retval"

// FunctionScope resolves a function instance's parameters, and its return
// value when AtReturn is set.
type FunctionScope struct {
	Function *Function
	Params   []Param
	Return   dwarf.Type
	AtReturn bool
	// Inlined is set in the scope of an inlined copy (NewInlinedScope):
	// Params are the copy's, and one without a location resolves to a
	// Root with Unavailable set.
	Inlined *InlinedInstance
}

// NewFunctionScope reads the instance's parameters and return type.
func (b *Binary) NewFunctionScope(fn *Function, atReturn bool) (*FunctionScope, error) {
	params, err := b.Params(fn)
	if err != nil {
		return nil, err
	}
	s := &FunctionScope{Function: fn, Params: params, AtReturn: atReturn}
	if atReturn {
		s.Return, _ = b.ReturnType(fn)
	}
	return s, nil
}

// Lookup implements Scope.
func (s *FunctionScope) Lookup(name string) (dwarf.Type, Root, error) {
	if name == ReturnValueName || name == "retval" {
		if !s.AtReturn {
			return nil, Root{}, fmt.Errorf("%w: %s is only known in a return probe", ErrBadExpression, name)
		}
		t := s.Return
		if t == nil {
			t = &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "long"}}}
		}
		return t, Root{Reg: RegRAX, Return: true}, nil
	}
	var names []string
	for _, p := range s.Params {
		if p.Name != name {
			names = append(names, p.Name)
			continue
		}
		if p.Err != nil {
			if s.Inlined != nil && p.Type != nil {
				return p.Type, Root{Unavailable: p.Err.Error()}, nil
			}
			return nil, Root{}, p.Err
		}
		l := p.Location
		switch l.Kind {
		case InRegister:
			return p.Type, Root{Reg: l.Reg}, nil
		case RegisterPlusOffset:
			return p.Type, Root{Reg: l.Reg, Add: l.Offset}, nil
		case Constant:
			return p.Type, Root{Const: true, Add: l.Offset}, nil
		default:
			return p.Type, Root{Reg: l.Reg, Add: l.Offset, Memory: true}, nil
		}
	}
	where := s.Function.Symbol
	if s.Inlined != nil {
		// The same for every copy, so that a script's error is
		// reported once, not once per copy.
		where = s.Inlined.Name + " (its inlined copies)"
	}
	return nil, Root{}, &NotFoundError{Kind: ErrNoParam, Name: name, Where: where, Closest: Closest(name, names, 3), All: names}
}

// NewScopeAt resolves the instance's parameters at pc, for a probe inside
// the function (FUNCTION+OFFSET, FILE:LINE).
func (b *Binary) NewScopeAt(fn *Function, pc uint64) (*FunctionScope, error) {
	params, err := b.ParamsAt(fn, pc)
	if err != nil {
		return nil, err
	}
	return &FunctionScope{Function: fn, Params: params}, nil
}
