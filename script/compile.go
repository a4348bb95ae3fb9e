package script

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch/flips"
)

// Program is a script resolved against one binary: what to attach, and
// how to print what it reads.
type Program struct {
	Probes []*probes.Probe
	// Points lists every probe point with the instances it attaches to.
	Points       []Attachment
	Aggregations []*Aggregation
	// Watches are the script's watch statements, resolved; their probes
	// are in Probes too (with no EventFormat), and Watch decodes their
	// events.
	Watches []*flips.Program

	formats map[*probes.Probe]*EventFormat
}

// Format says how the events of a probe of the program are shown; it is
// nil for a watch's probes, whose events are flips.
func (p *Program) Format(pr *probes.Probe) *EventFormat { return p.formats[pr] }

// Watch returns the watch a probe belongs to, or nil.
func (p *Program) Watch(pr *probes.Probe) *flips.Program {
	for _, w := range p.Watches {
		for _, q := range w.Probes {
			if q == pr {
				return w
			}
		}
	}
	return nil
}

// Attachment is a probe point and where it resolved.
type Attachment struct {
	Text      string
	Pos       Position
	Instances []Instance
	// Notes are what the user should know of the point as a whole: the
	// inlined copies a return probe cannot reach, those not probed.
	Notes []string
}

// Instance is one attach address of a probe point.
type Instance struct {
	Kind       string // uprobe or uretprobe
	Symbol     string
	Offset     uint64 // from the symbol
	Address    uint64
	FileOffset uint64
	// Inlined is the inlined function a line probe lands in; for an
	// inlined copy probed at its entry (InlinedCopy), the copy: "f
	// inlined into g at file.c:12".
	Inlined     string
	InlinedCopy bool
	Module      string // the file it is in: nginx, ngx_stream_module.so, libc.so.6
	// Notes say which values cannot be read here, and why: they print
	// as unavailable.
	Notes []string
}

// Aggregation is an @map with how to print its keys.
type Aggregation struct {
	*probes.Aggregation
	KeyNames []string
	// ProbeKey marks keys that are the builtin probe: their value is an
	// index into ProbeNames.
	ProbeKey   []bool
	ProbeNames []string
}

// Builtins are names every probe knows besides its function's arguments.
var Builtins = []string{"probe", symbols.ReturnValueName}

type compiler struct {
	img *symbols.Image
	// luaErr is why the image has no Lua to read, once a Lua value asked
	// (nil: it has; luaChecked says whether it was looked up).
	luaErr     error
	luaChecked bool
	fset       *FileSet
	errs       ErrorList
	defines    map[string]Expr
	aggs       map[string]*Aggregation
	prog       *Program
}

// Compile resolves every probe point, name and type against the image: the
// nginx executable and the modules it maps. A function resolves in every
// module that has it, or in the one that qualifies it (libc.so.6:close);
// its values resolve in its own module's DWARF. Watches follow the
// executable. Compile needs no privileges and attaches nothing; every
// error is reported.
func Compile(img *symbols.Image, s *Script) (*Program, error) {
	c := &compiler{img: img, fset: s.Files, defines: map[string]Expr{}, aggs: map[string]*Aggregation{}, prog: &Program{formats: map[*probes.Probe]*EventFormat{}}}
	tooLarge := false
	for _, d := range s.Defines {
		if _, dup := c.defines[d.Name]; dup {
			c.errorf(d.At, ErrResolve, "", "%s is defined twice", d.Name)
			continue
		}
		x := c.expand(d.X, nil)
		if c.tooLarge(d.At, d.Name, x) {
			tooLarge = true
			break // the names after it would only repeat the error
		}
		c.defines[d.Name] = x
	}
	if tooLarge {
		return nil, c.errs
	}
	for _, w := range s.Watches {
		c.watch(w)
	}
	if len(s.Probes) == 0 && len(s.Watches) == 0 && len(c.errs) == 0 {
		return nil, &Error{Msg: "the script has no probes", Hint: "a probe is FUNCTION { print(ARG) }", Err: ErrResolve}
	}
	for _, p := range s.Probes {
		c.probe(p)
	}
	if len(c.errs) > 0 {
		sort.SliceStable(c.errs, func(i, j int) bool {
			a, b := c.errs[i].Pos, c.errs[j].Pos
			if a.File != b.File {
				return false
			}
			return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
		})
		return nil, dedupe(c.errs)
	}
	return c.prog, nil
}

func dedupe(l ErrorList) ErrorList {
	seen := map[string]bool{}
	var out ErrorList
	for _, e := range l {
		k := e.Error()
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

func (c *compiler) errorf(pos int, sentinel error, hint, format string, args ...any) {
	c.errs = append(c.errs, &Error{Pos: c.fset.Position(pos), Msg: fmt.Sprintf(format, args...), Hint: hint, Err: sentinel})
}

// fail records an error from the symbols package at its position.
func (c *compiler) fail(pos int, err error) {
	var pe *symbols.PathError
	if errors.As(err, &pe) {
		c.errs = append(c.errs, &Error{Pos: c.fset.Position(pe.At), Msg: pe.Msg, Err: errors.Join(ErrResolve, pe.Err)})
		return
	}
	c.errs = append(c.errs, &Error{Pos: c.fset.Position(pos), Msg: err.Error(), Err: errors.Join(ErrResolve, err)})
}

// expand substitutes local names and definitions into x.
func (c *compiler) expand(x Expr, locals map[string]Expr) Expr {
	switch e := x.(type) {
	case *symbols.Ident:
		if v, ok := locals[e.Name]; ok {
			return v
		}
		if v, ok := c.defines[e.Name]; ok {
			return v
		}
		return e
	case *symbols.MemberExpr:
		n := *e
		n.X = c.expand(e.X, locals)
		return &n
	case *symbols.IndexExpr:
		n := *e
		n.X = c.expand(e.X, locals)
		return &n
	case *symbols.CastExpr:
		n := *e
		n.X = c.expand(e.X, locals)
		return &n
	case *BinaryExpr:
		n := *e
		n.L, n.R = c.expand(e.L, locals), c.expand(e.R, locals)
		return &n
	case *Not:
		n := *e
		n.X = c.expand(e.X, locals)
		return &n
	}
	return x
}

// maxExpanded bounds a name's expression after substitution. Names
// built from names can double in size with each one (a1 = a0 && a0,
// a2 = a1 && a1, ...); unbounded, compiling them never ends.
const maxExpanded = 1000

// tooLarge reports, as an error at pos, an expansion over maxExpanded.
func (c *compiler) tooLarge(pos int, name string, x Expr) bool {
	if n := nodes(x, maxExpanded+1); n <= maxExpanded {
		return false
	}
	c.errorf(pos, ErrResolve, "write the condition out, or split it over several names used once each", "%s expands to more than %d nodes after substituting the names it uses", name, maxExpanded)
	return true
}

// nodes counts x's nodes, stopping at limit: shared sub-trees count
// each time they occur, as compiling them would.
func nodes(x Expr, limit int) int {
	n := 1
	var kids []Expr
	switch e := x.(type) {
	case *symbols.MemberExpr:
		kids = []Expr{e.X}
	case *symbols.IndexExpr:
		kids = []Expr{e.X}
	case *symbols.CastExpr:
		kids = []Expr{e.X}
	case *BinaryExpr:
		kids = []Expr{e.L, e.R}
	case *Not:
		kids = []Expr{e.X}
	}
	for _, k := range kids {
		if n >= limit {
			break
		}
		n += nodes(k, limit-n)
	}
	return n
}

var watchModes = map[string]flips.Mode{"exact": flips.Exact, "diff": flips.Diff, "both": flips.Both}

func (c *compiler) watch(w *Watch) {
	plan, err := flips.Prepare(c.img.Main(), w.Expr, flips.Options{Mode: watchModes[w.Mode], Stack: true})
	if err != nil {
		hint := ""
		if errors.Is(err, flips.ErrNoSites) {
			hint = "watch diff " + w.Expr + " compares the field where nginx reads connections instead"
		}
		c.errorf(w.At, errors.Join(ErrResolve, err), hint, "%v", err)
		return
	}
	c.prog.Watches = append(c.prog.Watches, plan)
	att := Attachment{Text: "watch " + w.Expr, Pos: c.fset.Position(w.At)}
	for i, s := range plan.Sites {
		if plan.Probed[i] {
			att.Instances = append(att.Instances, Instance{Kind: "uprobe", Symbol: s.Function, Offset: s.Address - s.FunctionAddr, Address: s.Address, FileOffset: s.FileOffset})
		}
	}
	for _, pr := range plan.Probes {
		if pr.Diff == nil {
			continue
		}
		kind := "uprobe"
		if pr.Return {
			kind = "uretprobe"
		}
		att.Instances = append(att.Instances, Instance{Kind: kind, Symbol: pr.Function.Symbol, Address: pr.Function.Address, FileOffset: pr.Function.Offset})
	}
	c.prog.Points = append(c.prog.Points, att)
	c.prog.Probes = append(c.prog.Probes, plan.Probes...)
}

// site is one place a probe point attaches.
type site struct {
	fn  *symbols.Function
	at  uint64
	ret bool
	pc  uint64
	inl string
	// copy is the inlined copy probed at its entry, if the site is one.
	copy *symbols.InlinedInstance
}

func (c *compiler) probe(p *Probe) {
	locals := map[string]Expr{}
	for _, st := range p.Body {
		if l, ok := st.(*Let); ok {
			locals[l.Name] = c.expand(l.X, locals)
			if c.tooLarge(l.At, l.Name, locals[l.Name]) {
				return
			}
		}
	}
	stack, emits := false, len(p.Body) == 0
	for _, st := range p.Body {
		switch st.(type) {
		case *Stack:
			stack, emits = true, true
		case *Print, *Printf:
			emits = true
		}
	}
	for _, pt := range p.Points {
		sites, notes := c.resolvePoint(pt)
		att := Attachment{Text: pt.Text, Pos: c.fset.Position(pt.At), Notes: notes}
		for _, s := range sites {
			kind := "uprobe"
			if s.ret {
				kind = "uretprobe"
			}
			in := Instance{Kind: kind, Symbol: s.fn.Symbol, Offset: s.at, Address: s.pc, FileOffset: s.fn.Offset + s.at, Inlined: s.inl, Module: symbols.ModuleName(s.fn.Binary())}
			if s.copy != nil {
				in.Inlined, in.InlinedCopy = s.copy.String(), true
			}
			in.Notes = c.instance(p, pt, s, locals, stack, emits)
			att.Instances = append(att.Instances, in)
		}
		c.prog.Points = append(c.prog.Points, att)
	}
}

func (c *compiler) resolvePoint(pt ProbePoint) ([]site, []string) {
	if pt.Kind == AtLine {
		ls, err := c.img.LineSites(pt.File, pt.Line)
		if err != nil {
			c.errorf(pt.At, errors.Join(ErrResolve, err), lineHint(err), "%v", err)
			return nil, nil
		}
		var out []site
		for _, l := range ls {
			out = append(out, site{fn: l.Function, at: l.Address - l.Function.Address, pc: l.Address, inl: l.Inlined})
		}
		return out, nil
	}
	fns, err := c.img.Lookup(pt.Function)
	_, symbol := symbols.SplitQualified(pt.Function)
	// The copies GCC inlined into other functions: an entry probe stops
	// at each, as gdb's breakpoint does; a return probe cannot. A clone's
	// exact name (ngx_foo.isra.0) names that instance alone.
	var copies []symbols.InlinedInstance
	var unplaced int
	var copiesErr error
	if pt.Kind != AtOffset && symbols.BaseName(symbol) == symbol {
		copies, unplaced, copiesErr = c.img.InlinedInstances(pt.Function)
	}
	if err != nil && pt.Kind == AtEntry && len(copies) > 0 {
		// No out-of-line copy: the inlined ones are the function.
		fns, err = nil, nil
	}
	if err != nil {
		if inl := c.img.InlineSites(symbols.BaseName(symbol)); len(inl) > 0 {
			msg := fmt.Sprintf("%v: %s has no out-of-line copy to probe; GCC inlined it at %d call sites", symbols.ErrInlined, pt.Function, len(inl))
			switch {
			case pt.Kind == AtReturn:
				msg += ", and an inlined copy has no return to probe"
			case pt.Kind == AtEntry && unplaced > 0:
				msg += fmt.Sprintf(", and no copy can be probed: the code of %d is outside every function symbol", unplaced)
			case pt.Kind == AtEntry:
				msg += ", and no copy has code to probe"
			}
			c.errorf(pt.At, errors.Join(ErrResolve, symbols.ErrInlined), inlineHint(inl), "%s", msg)
			return nil, nil
		}
		var nf *symbols.NotFoundError
		if errors.As(err, &nf) && len(c.img.Opened()) == 1 && len(c.img.Unopened()) == 0 {
			// The executable alone (--binary without --module): the
			// function may be a dynamic module's.
			c.errorf(pt.At, errors.Join(ErrResolve, err), moduleHint(symbol), "%v", err)
			return nil, nil
		}
		c.fail(pt.At, err)
		return nil, nil
	}
	var out []site
	var notes []string
	switch pt.Kind {
	case AtEntry, AtReturn:
		for _, fn := range fns {
			out = append(out, site{fn: fn, ret: pt.Kind == AtReturn, pc: fn.Address})
		}
		// A part GCC split off the function and inlined back into one
		// of its instances runs after that instance's entry, which is
		// probed: probing it too would report the call twice.
		var split []string
		calls := copies[:0:0]
		for _, in := range copies {
			if in.IsSplitPart() {
				split = append(split, fmt.Sprintf("%s+%#x", in.Function.Symbol, in.Offset))
				continue
			}
			calls = append(calls, in)
		}
		if pt.Kind == AtEntry {
			for i := range calls {
				in := &calls[i]
				out = append(out, site{fn: in.Function, at: in.Offset, pc: in.Address, copy: in})
			}
		} else if len(calls) > 0 {
			notes = append(notes, returnCopiesNote(symbols.BaseName(symbol), calls))
		}
		if len(split) > 0 && pt.Kind == AtEntry {
			notes = append(notes, fmt.Sprintf("%d inlined copies of %s are parts GCC split off it and inlined back into its own code (%s): they run after an entry probed here, and are not probed again", len(split), symbols.BaseName(symbol), strings.Join(split, ", ")))
		}
		if unplaced > 0 {
			notes = append(notes, fmt.Sprintf("%d inlined copies of %s are not probed: their code is outside every function symbol (a .cold part); a FILE:LINE probe in its body reaches them", unplaced, symbols.BaseName(symbol)))
		}
		if copiesErr != nil {
			notes = append(notes, fmt.Sprintf("inlined copies of %s may be missing: %v", symbols.BaseName(symbol), copiesErr))
		}
	case AtOffset:
		if len(fns) > 1 {
			// The exact symbol names one instance: ngx_foo beside
			// ngx_foo.part.0, as the hint below suggests.
			var exact []*symbols.Function
			for _, fn := range fns {
				if fn.Symbol == symbol {
					exact = append(exact, fn)
				}
			}
			if len(exact) == 1 {
				fns = exact
			}
		}
		if len(fns) > 1 {
			var names []string
			seen, shared := map[string]bool{}, false
			for _, fn := range fns {
				names = append(names, fmt.Sprintf("%s+%#x", fn.Symbol, pt.Offset))
				shared = shared || seen[fn.Symbol]
				seen[fn.Symbol] = true
			}
			hint := "name one instance: " + strings.Join(names, ", ")
			if shared {
				// Static functions of the same name in different files:
				// no symbol tells them apart.
				hint = "the instances share the symbol " + fns[0].Symbol + " (static functions of different files): probe a FILE:LINE in the one you want"
			}
			c.errorf(pt.At, ErrResolve, hint, "%s has %d instances with different code, so an offset is ambiguous", pt.Function, len(fns))
			return nil, nil
		}
		fn := fns[0]
		if err := c.checkBoundary(fn, pt.Offset); err != nil {
			c.errorf(pt.At, ErrResolve, "list the instruction boundaries with objdump -d --start-address", "%v", err)
			return nil, nil
		}
		out = append(out, site{fn: fn, at: pt.Offset, pc: fn.Address + pt.Offset})
	}
	return out, notes
}

// returnCopiesNote says that a return probe misses the function's
// inlined copies, and what reaches them.
func returnCopiesNote(name string, copies []symbols.InlinedInstance) string {
	where := make([]string, 0, 3)
	for i, in := range copies {
		if i == 3 {
			where = append(where, "...")
			break
		}
		where = append(where, in.String())
	}
	s := fmt.Sprintf("%d inlined copies of %s are not covered: an inlined copy has no return instruction to probe (%s); a FILE:LINE probe in its body reaches every copy", len(copies), name, strings.Join(where, "; "))
	if in := copies[0]; in.DeclFile != "" {
		s += fmt.Sprintf(", e.g. a line after %s:%d, where %s is defined", in.DeclFile, in.DeclLine, name)
	}
	return s
}

// maxOffset bounds an offset into a function: larger ones are refused
// before reading any code.
const maxOffset = 1 << 30

// checkBoundary refuses an offset that is not the start of an
// instruction: a breakpoint in the middle of one corrupts nginx's code.
func (c *compiler) checkBoundary(fn *symbols.Function, off uint64) error {
	if fn.Size > 0 && off >= fn.Size {
		return fmt.Errorf("offset %#x is past the end of %s (%d bytes)", off, fn.Symbol, fn.Size)
	}
	// Without wrapping around: a function whose symbol has no size
	// (frame_dummy) gets no bound from the check above.
	var code []byte
	var err error
	if off < maxOffset {
		code, err = fn.Binary().Code(fn.Address, int(off)+16)
	}
	if err != nil || uint64(len(code)) <= off {
		return fmt.Errorf("%s+%#x is outside .text", fn.Symbol, off)
	}
	var pc uint64
	for pc < off {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return fmt.Errorf("cannot decode %s at +%#x: %v", fn.Symbol, pc, err)
		}
		pc += uint64(inst.Len)
	}
	if pc != off {
		return fmt.Errorf("%s+%#x is inside an instruction (the nearest start before it is +%#x, after it +%#x)", fn.Symbol, off, pc-uint64(lastLen(code, off)), pc)
	}
	return nil
}

// lastLen is the length of the instruction that covers off.
func lastLen(code []byte, off uint64) int {
	var pc uint64
	for pc < uint64(len(code)) {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0
		}
		if pc+uint64(inst.Len) > off {
			return inst.Len
		}
		pc += uint64(inst.Len)
	}
	return 0
}

func lineHint(err error) string {
	var le *symbols.LineError
	if errors.As(err, &le) && len(le.Nearest) > 0 {
		best := le.Nearest[0]
		for _, n := range le.Nearest {
			if abs(n-le.Line) < abs(best-le.Line) {
				best = n
			}
		}
		return fmt.Sprintf("probe a line with code, e.g. %s:%d", le.File, best)
	}
	if errors.Is(err, symbols.ErrFileNotFound) {
		return "use a path as the build saw it, e.g. src/os/unix/ngx_recv.c, or its file name"
	}
	return ""
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func inlineHint(sites []symbols.InlineSite) string {
	var lines []string
	for i, s := range sites {
		if i == 8 {
			lines = append(lines, fmt.Sprintf("... and %d more", len(sites)-8))
			break
		}
		lines = append(lines, fmt.Sprintf("in %s at %s:%d (%#x)", s.Caller, s.File, s.Line, s.Low))
	}
	return "probe a line inside it (FILE:LINE reaches every inlined copy) or one of its callers:\n    " + strings.Join(lines, "\n    ")
}

// scope resolves arguments, $retval and builtins for one instance.
type scope struct {
	bin    *symbols.Binary
	inner  *symbols.FunctionScope
	probe  int64 // the probe's index, the builtin probe's value
	extra  []string
	atLine bool
	// unavailable are the names looked up that cannot be read at this
	// instance (an inlined copy's optimized-out argument), with why.
	unavailable []unavailableName
}

type unavailableName struct{ name, why string }

var intType = &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "long"}}}

func (s *scope) Lookup(name string) (dwarf.Type, symbols.Root, error) {
	if name == "probe" {
		return intType, symbols.Root{Const: true, Add: s.probe}, nil
	}
	if name == symbols.ReturnValueName && s.inner.AtReturn && s.inner.Return == nil {
		// The symbols package reads an unknown return type as a long;
		// a function declared void returns nothing to read.
		if t, err := s.bin.ReturnType(s.inner.Function); err == nil && t == nil {
			return nil, symbols.Root{}, fmt.Errorf("%w: %s returns void, so there is no %s", symbols.ErrBadExpression, s.inner.Function.Name, name)
		}
	}
	t, r, err := s.inner.Lookup(name)
	if err == nil && r.Unavailable != "" && !slices.ContainsFunc(s.unavailable, func(u unavailableName) bool { return u.name == name }) {
		s.unavailable = append(s.unavailable, unavailableName{name, r.Unavailable})
	}
	var nf *symbols.NotFoundError
	if errors.As(err, &nf) {
		all := append(append([]string(nil), nf.All...), s.extra...)
		nf2 := *nf
		nf2.Closest = symbols.Closest(name, all, 3)
		return nil, r, &nf2
	}
	return t, r, err
}

// instance compiles the probe at one site; it returns the notes on
// values that cannot be read there.
func (c *compiler) instance(p *Probe, pt ProbePoint, s site, locals map[string]Expr, stack, emits bool) []string {
	var fs *symbols.FunctionScope
	var err error
	switch {
	case !readsValues(p):
		// Nothing to resolve: a hit can be probed by name even without
		// DWARF (an exported function of a stripped nginx).
		fs = &symbols.FunctionScope{Function: s.fn, AtReturn: s.ret}
	case s.copy != nil:
		// The copy's own arguments; one it lost is unavailable there,
		// not an error for the whole script.
		fs = s.fn.Binary().NewInlinedScope(s.copy)
	case s.at == 0:
		fs, err = s.fn.Binary().NewFunctionScope(s.fn, s.ret)
	default:
		fs, err = s.fn.Binary().NewScopeAt(s.fn, s.pc)
	}
	if err != nil {
		c.fail(pt.At, err)
		return nil
	}
	extra := append([]string{"probe"}, names(locals)...)
	extra = append(extra, names(c.defines)...)
	sc := &scope{bin: s.fn.Binary(), inner: fs, probe: int64(len(c.prog.Probes)), extra: extra}
	pr := &probes.Probe{Name: pt.Text, Function: s.fn, Return: s.ret, At: s.at, Stack: stack, NoEvent: !emits}
	if s.copy != nil {
		pr.Inlined = s.copy.String()
	}
	format := &EventFormat{}
	nerr := len(c.errs)
	if p.Filter != nil {
		rest, matches := c.luaFilter(c.expand(p.Filter, locals))
		if rest != nil {
			pr.Filter = c.cond(rest, sc)
		}
		pr.LuaChunk = matches
	}
	for _, st := range p.Body {
		switch st := st.(type) {
		case *Print:
			for _, a := range st.Args {
				if name, ok := c.luaValue(a, locals); ok {
					if name != "" {
						pr.Lua = append(pr.Lua, probes.LuaValue{Name: name, At: len(pr.Values) + len(pr.Lua)})
						format.Values = append(format.Values, ValueFormat{Name: a.Name, Group: st.Label})
					}
					continue
				}
				if plan := c.value(a, locals, sc); plan != nil {
					pr.Values = append(pr.Values, plan)
					format.Values = append(format.Values, ValueFormat{Name: a.Name, Group: st.Label, Display: displayFor(plan)})
				}
			}
		case *Printf:
			m := c.message(st)
			for _, a := range st.Args {
				if name, ok := c.luaValue(a, locals); ok {
					if name != "" {
						m.Args = append(m.Args, len(pr.Values)+len(pr.Lua))
						pr.Lua = append(pr.Lua, probes.LuaValue{Name: name, At: len(pr.Values) + len(pr.Lua)})
						format.Values = append(format.Values, ValueFormat{Name: a.Name, Hidden: true})
					}
					continue
				}
				if plan := c.value(a, locals, sc); plan != nil {
					m.Args = append(m.Args, len(pr.Values)+len(pr.Lua))
					pr.Values = append(pr.Values, plan)
					format.Values = append(format.Values, ValueFormat{Name: a.Name, Hidden: true})
				}
			}
			format.Messages = append(format.Messages, m)
		case *Aggregate:
			c.aggregate(st, pr, locals, sc)
		}
	}
	if len(c.errs) > nerr {
		return nil
	}
	// The probe attaches here all the same: say what it cannot read.
	var notes []string
	for _, u := range sc.unavailable {
		why := u.why
		if _, after, ok := strings.Cut(why, symbols.ErrNoLocation.Error()+": "); ok {
			why = after
		}
		const effect = "values using it print as unavailable, and a comparison on it is false"
		notes = append(notes, fmt.Sprintf("%s is unavailable here (%s): %s", u.name, why, effect))
		pr.Notes = append(pr.Notes, fmt.Sprintf("%s is unavailable at %s (%s): %s", u.name, pr.Inlined, why, effect))
	}
	if pr.Stack || len(pr.Lua) > 0 || len(pr.LuaChunk) > 0 {
		pr.LuaState = luaStateArg(sc)
	}
	c.prog.Probes = append(c.prog.Probes, pr)
	c.prog.formats[pr] = format
	return notes
}

// readsValues reports whether a probe reads anything at a hit: a filter,
// printed values or aggregation keys and values.
func readsValues(p *Probe) bool {
	if p.Filter != nil {
		return true
	}
	for _, st := range p.Body {
		switch st := st.(type) {
		case *Print:
			if len(st.Args) > 0 {
				return true
			}
		case *Printf:
			if len(st.Args) > 0 {
				return true
			}
		case *Aggregate:
			if len(st.Keys) > 0 || st.Arg != nil {
				return true
			}
		}
	}
	return false
}

func names[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// value compiles a printed value: a member path.
func (c *compiler) value(a PrintArg, locals map[string]Expr, sc *scope) *symbols.Plan {
	x := c.expand(a.X, locals)
	switch x.(type) {
	case *IntLit, *StrLit:
		c.errorf(x.Pos(), ErrResolve, "put fixed text in printf's format", "%s is a literal; print reads values from nginx", a.Text)
		return nil
	case *BinaryExpr, *Not:
		c.errorf(x.Pos(), ErrResolve, "use it as a filter: PROBE /COND/ { ... }, or print its operands", "%s is a condition, not a value to print", a.Text)
		return nil
	}
	if !isPath(x) {
		c.errorf(x.Pos(), ErrResolve, "", "%s is not a member path", a.Text)
		return nil
	}
	plan, err := sc.bin.Compile(a.Text, x, sc)
	if err != nil {
		c.fail(x.Pos(), err)
		return nil
	}
	return plan
}

// moduleHint says where a function missing from the executable may be:
// in a dynamic module, which --binary reads only when --module names it.
func moduleHint(function string) string {
	h := "only the executable was read: a dynamic module's function needs --module PATH with --binary, or -p PID of a running nginx (its modules are found)"
	if strings.HasPrefix(function, "ngx_http_lua_") {
		h += "; ngx_http_lua_* are lua-nginx-module's: --module /usr/lib/nginx/modules/ngx_http_lua_module.so"
	}
	return h
}

// luaValue reports whether a is a value of the Lua walk ($lua_where,
// $lua_chunk): ok is true for any $lua_ name, and name is "" when it is
// an error (recorded: a misspelled name, or an nginx without
// lua-nginx-module).
func (c *compiler) luaValue(a PrintArg, locals map[string]Expr) (name string, ok bool) {
	id, isIdent := c.expand(a.X, locals).(*symbols.Ident)
	if !isIdent || !strings.HasPrefix(id.Name, "$lua") {
		return "", false
	}
	if !slices.Contains(probes.LuaValueNames, id.Name) {
		c.errorf(id.At, ErrResolve, "", "%s is not a Lua value; there are %s (closest: %s)", id.Name, strings.Join(probes.LuaValueNames, " and "), strings.Join(symbols.Closest(id.Name, probes.LuaValueNames, 1), ", "))
		return "", true
	}
	if c.needLua(id) != nil {
		return "", true
	}
	return id.Name, true
}

// isPath reports whether x is made of names, members, indexes and casts only.
func isPath(x Expr) bool {
	switch e := x.(type) {
	case *symbols.Ident:
		return true
	case *symbols.MemberExpr:
		return isPath(e.X)
	case *symbols.IndexExpr:
		return isPath(e.X)
	case *symbols.CastExpr:
		return isPath(e.X)
	}
	return false
}

// message parses a printf's format and checks it against its arguments.
func (c *compiler) message(st *Printf) Message {
	verbs, msg, hint := parseFormat(st.Format)
	if msg != "" {
		c.errorf(st.At, ErrSyntax, hint, "%s", msg)
		return Message{Format: st.Format}
	}
	if n := len(verbs) - 1; n != len(st.Args) {
		c.errorf(st.At, ErrSyntax, "", "printf format has %d verbs but %d arguments", n, len(st.Args))
	}
	return Message{Format: st.Format, verbs: verbs}
}

func (c *compiler) aggregate(st *Aggregate, pr *probes.Probe, locals map[string]Expr, sc *scope) {
	u := probes.AggregateUpdate{}
	var keyNames []string
	var probeKey []bool
	for _, k := range st.Keys {
		x := c.expand(k.X, locals)
		if id, ok := x.(*symbols.Ident); ok && id.Name == "probe" {
			probeKey = append(probeKey, true)
		} else {
			probeKey = append(probeKey, false)
		}
		plan := c.value(k, locals, sc)
		if plan == nil {
			return
		}
		u.Keys = append(u.Keys, plan)
		keyNames = append(keyNames, k.Text)
	}
	if st.Arg != nil {
		op, ok := c.operand(c.expand(st.Arg, locals), sc, st.ArgText)
		if !ok {
			return
		}
		if op.Plan == nil {
			c.errorf(st.Arg.Pos(), ErrResolve, "count() counts hits", "%s(%s) of a constant", st.Func, st.ArgText)
			return
		}
		if kind := stringKind(op.Plan); kind != "" {
			c.errorf(st.Arg.Pos(), ErrResolve, fmt.Sprintf("count by it instead: @%s[%s] = count()", st.Map, st.ArgText),
				"%s(%s): %s is a string (%s), and %s needs a number", st.Func, st.ArgText, st.ArgText, kind, st.Func)
			return
		}
		u.Value = &op
	}
	a := c.aggs[st.Map]
	if a == nil {
		a = &Aggregation{Aggregation: &probes.Aggregation{Name: st.Map, Func: st.Func}, KeyNames: keyNames, ProbeKey: probeKey}
		c.aggs[st.Map] = a
		c.prog.Aggregations = append(c.prog.Aggregations, a)
	} else if a.Func != st.Func || len(a.KeyNames) != len(keyNames) {
		c.errorf(st.At, ErrResolve, "give each aggregation its own @name", "@%s is %s with %d keys elsewhere, %s with %d here", st.Map, a.Func, len(a.KeyNames), st.Func, len(keyNames))
		return
	}
	u.Aggregation = a.Aggregation
	pr.Aggregates = append(pr.Aggregates, u)
	if len(a.ProbeNames) <= int(sc.probe) {
		a.ProbeNames = append(a.ProbeNames, make([]string, int(sc.probe)+1-len(a.ProbeNames))...)
	}
	a.ProbeNames[sc.probe] = pr.Name
}

// ProbeName returns the probe a probe-key value stands for.
func (a *Aggregation) ProbeName(id int64) string {
	if id >= 0 && int(id) < len(a.ProbeNames) && a.ProbeNames[id] != "" {
		return a.ProbeNames[id]
	}
	return fmt.Sprint(id)
}
