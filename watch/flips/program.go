package flips

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"strings"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
)

// Mode chooses how flips are caught.
type Mode int

const (
	// Exact probes the instructions that write the field.
	Exact Mode = iota
	// Diff compares the field at probe points where the object is reachable.
	Diff
	// Both runs the two side by side, to cross-check them.
	Both
)

// Sentinel errors of Prepare in exact mode; match them with errors.Is.
// Their text names the setting that helps, not how a command line or a
// script spells it. In Both mode they are not errors: the diff half
// still works.
var (
	// ErrNoSites: no instruction that can be probed writes the field;
	// the diff mode compares the field instead.
	ErrNoSites = errors.New("no write sites found")
	// ErrNoProbedSites: write sites were found, but all are left out by
	// default (wide stores, see Options.AllSites); all sites probes them.
	ErrNoProbedSites = errors.New("no write site is probed by default")
)

// Options tune Prepare.
type Options struct {
	Mode Mode
	// DiffPoints are where the diff mode compares the field; nil means
	// DefaultDiffPoints.
	DiffPoints []DiffPoint
	// Stack adds a stack to every flip.
	Stack bool
	// AllSites also probes plain stores of 8 bytes or more whose base
	// register is not known to point at the watched type: they are
	// pointer and counter stores into other structs that happen to cover
	// the field's byte, and they run on every request. nginx writes
	// bitfields with byte to dword read-modify-writes, which are probed
	// either way.
	AllSites bool
}

// Program is a watch resolved against one binary: its probes and how to
// decode their events.
type Program struct {
	Expr  Expr
	Field watch.FieldRef
	Mode  Mode
	// Sites are every write site found; Probed says which are attached
	// (modelled: one probe; not modelled: a probe before and after).
	Sites   []watch.Site
	Probed  []bool
	Skipped map[int]string // why a site is not probed, by index in Sites
	Probes  []*probes.Probe
	// Points name diff-mode probe points by id.
	Points []string
	// spans marks the entry points whose function has a return point.
	spans []bool
	// Notes say what is not covered, e.g. a diff point missing from the binary.
	Notes []string

	exact map[*probes.Probe]bool
	// lines caches the writing line per site, read from the source tree
	// when it is present.
	lines map[int]int
	dir   string
}

// identity values, rooted at the object's connection.
var identity = []struct{ name, expr string }{
	{"conn", "c->number"},
	{"role", "c->listening"},
	{"logged_as", "c->log->connection"},
	{"addr", "c->addr_text"},
	{"client", "((ngx_http_log_ctx_t *) c->log->data)->connection->addr_text"},
}

// objectScope resolves c to the connection held in a pseudo register.
type objectScope struct{ t dwarf.Type }

func (s objectScope) Lookup(name string) (dwarf.Type, symbols.Root, error) {
	if name != "c" {
		return nil, symbols.Root{}, fmt.Errorf("%w: only c is known here", symbols.ErrNoParam)
	}
	return s.t, symbols.Root{Reg: probes.RegObject}, nil
}

func pseudoPlan(name string, reg int) *symbols.Plan {
	u64 := &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "unsigned long"}}}
	return &symbols.Plan{Expr: name, Type: u64, Root: symbols.Root{Reg: reg}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}}
}

// DiffPoint is a function where diff mode reads the field, and how the
// connection is reached from its arguments.
type DiffPoint struct {
	Function string
	Key      string // an expression for the connection, e.g. c or r->connection
	Return   bool   // also compare at return: a change in between is inside the function
	Evict    bool   // the connection dies here
}

// DefaultDiffPoints are where nginx reads from and closes connections.
var DefaultDiffPoints = []DiffPoint{
	{Function: "ngx_unix_recv", Key: "c", Return: true},
	{Function: "ngx_ssl_recv", Key: "c", Return: true},
	{Function: "ngx_readv_chain", Key: "c", Return: true},
	{Function: "ngx_http_upstream_check_broken_connection", Key: "r->connection", Return: true},
	{Function: "ngx_http_finalize_request", Key: "r->connection"},
	{Function: "ngx_close_connection", Key: "c", Evict: true},
}

// Prepare resolves a watch expression against a binary: the field, its
// write sites and the probes, as opts says.
func Prepare(bin *symbols.Binary, expr string, opts Options) (*Program, error) {
	x, err := ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	typeName, member := connType, x.Field
	if x.Event != "" {
		if typeName, err = memberTypeName(bin, connType, x.Event); err != nil {
			return nil, err
		}
	}
	if pointee, err := memberTypeName(bin, typeName, member); err == nil {
		return nil, fmt.Errorf("%w: %s is a pointer (%s *), not a flag or a number; watch one of its fields, e.g. %s->eof", watch.ErrNotField, x.Text, pointee, x.Text)
	}
	field, err := watch.ResolveField(bin, typeName, member)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode
	p := &Program{Expr: x, Field: field, Mode: mode, Skipped: map[int]string{}, exact: map[*probes.Probe]bool{}, lines: map[int]int{}, dir: bin.CompDir()}
	connT, err := bin.Type(connType)
	if err != nil {
		return nil, err
	}
	connPtr := &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: connT}
	var ids []*symbols.Plan
	for _, v := range identity {
		plan, err := bin.CompileText(v.expr, objectScope{connPtr})
		if err != nil {
			// A build without the http module has no client address for
			// upstreams; a reduced connection type lacks others.
			p.Notes = append(p.Notes, fmt.Sprintf("flips will not show %s: %v", v.name, firstLine(err)))
			continue
		}
		plan.Expr = v.name
		ids = append(ids, plan)
	}
	values := func() []*symbols.Plan {
		return append([]*symbols.Plan{pseudoPlan("site", probes.RegSite), pseudoPlan("old", probes.RegOld), pseudoPlan("new", probes.RegNew), pseudoPlan("prev", probes.RegPrevPoint)}, ids...)
	}
	if mode == Exact || mode == Both {
		w, err := p.exactWatch(bin, x, opts.AllSites)
		if err != nil && (mode == Exact || !errors.Is(err, ErrNoSites) && !errors.Is(err, ErrNoProbedSites)) {
			return nil, err
		}
		if w != nil {
			pr := &probes.Probe{Name: "watch " + x.Text, Function: watchFunction(), Watch: w, Values: values(), Stack: opts.Stack}
			p.exact[pr] = true
			p.Probes = append(p.Probes, pr)
		}
	}
	if mode == Diff || mode == Both {
		points := opts.DiffPoints
		if points == nil {
			points = DefaultDiffPoints
		}
		if err := p.diffProbes(bin, x, points, values, opts.Stack); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// watchFunction is the Function of a watch's exact-mode probe. The probe
// attaches to the watch's write sites, not to a function, but
// probes.Probe needs a Function on every probe: probes keys what entry
// probes save for return probes by its Address (0 here, no function's
// entry), and summaries print its Symbol ("watch").
func watchFunction() *symbols.Function {
	return &symbols.Function{Name: "watch", Symbol: "watch"}
}

// memberTypeName is the name of the type a pointer member points to.
func memberTypeName(bin *symbols.Binary, typeName, member string) (string, error) {
	m, err := findMember(bin, typeName, member)
	if err != nil {
		return "", err
	}
	if pt, ok := symbols.Underlying(m.Type).(*dwarf.PtrType); ok && pt.Type != nil {
		return symbols.TypeName(pt.Type), nil
	}
	return "", fmt.Errorf("%w: %s.%s is not a pointer", ErrUnsupportedExpr, typeName, member)
}

func memberOffset(bin *symbols.Binary, typeName, member string) (int64, error) {
	m, err := findMember(bin, typeName, member)
	if err != nil {
		return 0, err
	}
	return m.ByteOffset(), nil
}

// findMember finds a member of a struct type by name, at any depth.
func findMember(bin *symbols.Binary, typeName, member string) (symbols.Member, error) {
	t, err := bin.Type(typeName)
	if err != nil {
		return symbols.Member{}, err
	}
	ms, err := symbols.Members(t)
	if err != nil {
		return symbols.Member{}, err
	}
	for _, m := range ms {
		if m.Name == member {
			return m, nil
		}
	}
	return symbols.Member{}, fmt.Errorf("%w: %s has no member %s", symbols.ErrFieldNotFound, typeName, member)
}

// exactWatch finds the write sites and the pointer round trip that tells
// a connection's event (or the connection) from other memory.
func (p *Program) exactWatch(bin *symbols.Binary, x Expr, allSites bool) (*probes.Watch, error) {
	res, err := watch.Scan(bin, p.Field, &watch.Options{DropMismatch: true})
	if err != nil {
		return nil, err
	}
	p.Sites = res.Sites
	p.Probed = make([]bool, len(p.Sites))
	evType, err := memberTypeName(bin, connType, "read")
	if err != nil {
		return nil, err
	}
	data, err := memberOffset(bin, evType, "data")
	if err != nil {
		return nil, err
	}
	readOff, err := memberOffset(bin, connType, "read")
	if err != nil {
		return nil, err
	}
	writeOff, err := memberOffset(bin, connType, "write")
	if err != nil {
		return nil, err
	}
	w := &probes.Watch{FieldOffset: p.Field.Offset, BitOffset: p.Field.BitOffset, BitSize: p.Field.BitSize}
	// A live connection's events point back at it: c->read->data == c
	// and c->write->data == c.
	w.Check.OwnerLoops = [][]int64{{readOff, data}, {writeOff, data}}
	if x.Event != "" {
		evOff := readOff
		if x.Event == "write" {
			evOff = writeOff
		}
		w.Check.OwnerLoads = []int64{data}
		w.Check.OwnerToObject = []int64{evOff}
	}
	wide := 0
	for i, s := range p.Sites {
		ws, why := watchSite(s)
		if why == "" && !allSites {
			if why = wideStore(s, watch.LoadedFromSameWord(bin, s)); why != "" {
				wide++
			}
		}
		if why != "" {
			p.Skipped[i] = why
			continue
		}
		p.Probed[i] = true
		w.Sites = append(w.Sites, ws)
	}
	if len(w.Sites) == 0 && wide > 0 {
		return nil, fmt.Errorf("%w for %s (%s.%s) in %s: the %d found are wide stores with no %s variable in their base register; all sites (Options.AllSites) probes them", ErrNoProbedSites, x.Text, p.Field.Type, p.Field.Member, bin.Path, wide, p.Field.Type)
	}
	if len(w.Sites) == 0 {
		return nil, fmt.Errorf("%w for %s (%s.%s) in %s; the diff mode compares the field instead, at functions that read the connection", ErrNoSites, x.Text, p.Field.Type, p.Field.Member, bin.Path)
	}
	return w, nil
}

// watchSite converts a site for the BPF side; why says why it cannot be.
func watchSite(s watch.Site) (probes.WatchSite, string) {
	ws := probes.WatchSite{FileOffset: s.FileOffset, Len: s.Len, BaseReg: s.Base, IndexReg: s.Index, Scale: s.Scale, BaseAt: s.BaseAt, SrcReg: -1}
	switch {
	case s.Global != "":
		// rip-relative: the object is at a fixed distance from the
		// instruction, whatever the load address.
		ws.BaseReg, ws.IndexReg = symbols.RegRIP, watch.NoReg
		ws.BaseAt = int64(s.Address) - int64(s.GlobalAddr)
	case s.Base == watch.NoReg:
		return ws, "an absolute address: no base register to find the object"
	}
	e := s.Effect
	if !e.Valid {
		return ws, "" // compared before and after the instruction
	}
	ws.Modelled = true
	ws.Keep, ws.Set, ws.Flip, ws.Take = e.Keep, e.Set, e.Flip, e.Take
	if e.SrcReg != watch.NoReg {
		ws.SrcReg, ws.SrcShift = e.SrcReg, e.SrcShift
		switch e.SrcOp {
		case watch.ClearBits:
			ws.SrcOp = probes.SrcAnd
		case watch.ToggleBits:
			ws.SrcOp = probes.SrcXor
		default:
			ws.SrcOp = probes.SrcOr
		}
	}
	return ws, ""
}

// wideStore says why a site is left out by default, or "". rmw tells a
// read-modify-write of the same word from a copy out of another object.
func wideStore(s watch.Site, rmw bool) string {
	if s.Hint == watch.HintMatch || s.Size < 8 || rmw {
		return ""
	}
	what := "store"
	if s.LoadAddr != 0 {
		what = "copy from another object"
	}
	return fmt.Sprintf("a %d-byte %s with no %s variable in its base register: likely another struct's pointer or counter (all sites, Options.AllSites, probes it)", s.Size, what, s.Field.Type)
}

func (p *Program) diffProbes(bin *symbols.Binary, x Expr, points []DiffPoint, values func() []*symbols.Plan, stack bool) error {
	suffix := strings.TrimPrefix(x.Text, "c")
	for _, dp := range points {
		fns, err := bin.Lookup(dp.Function)
		if err != nil {
			p.Notes = append(p.Notes, fmt.Sprintf("diff point %s: not in this binary", dp.Function))
			continue
		}
		for _, ret := range []bool{false, true} {
			if ret && !dp.Return {
				continue
			}
			name := dp.Function
			if ret {
				name += "%return"
			}
			id := uint32(len(p.Points))
			p.Points = append(p.Points, name)
			p.spans = append(p.spans, !ret && dp.Return)
			for _, fn := range fns {
				scope, err := bin.NewFunctionScope(fn, ret)
				if err != nil {
					return err
				}
				key, err := bin.CompileText(dp.Key, scope)
				if err != nil {
					return fmt.Errorf("diff point %s: %w", name, err)
				}
				val, err := bin.CompileText(dp.Key+suffix, scope)
				if err != nil {
					return fmt.Errorf("diff point %s: %w", name, err)
				}
				p.Probes = append(p.Probes, &probes.Probe{
					Name: "diff " + name, Function: fn, Return: ret, Values: values(), Stack: stack,
					Diff: &probes.Diff{Key: key, Value: val, Point: id, Evict: dp.Evict},
				})
			}
		}
	}
	if len(p.Points) == 0 {
		return errors.New("diff mode: none of the probe points is in this binary")
	}
	return nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
