package watch

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
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

// ErrNoSites: no instruction writes the field; diff mode still works.
var ErrNoSites = errors.New("no write sites found")

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

// Flip is a decoded change of the watched field.
type Flip struct {
	Mode     string `json:"mode"` // exact or diff
	Field    string `json:"field"`
	Old      uint64 `json:"old"`
	New      uint64 `json:"new"`
	Conn     int64  `json:"conn"`
	Role     string `json:"role"`
	LoggedAs int64  `json:"logged_as"`
	Client   string `json:"client,omitempty"`
	Function string `json:"function"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	// Site is the write instruction (exact mode).
	Site string `json:"site,omitempty"`
	// From and To are the probe points that saw the old and the new value
	// (diff mode); equal functions mean the change happened inside it.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// Plan is a watch resolved against a binary: the probes to attach and
// how to read their events.
type Plan struct {
	Expr  Expr
	Field FieldRef
	Mode  Mode
	// Sites are every write site found; Probed says which are attached
	// (modelled: one probe; not modelled: a probe before and after).
	Sites   []Site
	Probed  []bool
	Skipped map[int]string // why a site is not probed
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

// Prepare resolves a watch: the field, its write sites and the probes.
// Stack adds a stack to every flip.
//
// Unless allSites is set, plain stores of 8 bytes or more whose base
// register is not known to point at the watched type are not probed:
// they are pointer and counter stores into other structs that happen to
// cover the field's byte, and they run on every request. nginx writes
// bitfields with byte to dword read-modify-writes, which stay probed.
func Prepare(bin *symbols.Binary, text string, mode Mode, points []DiffPoint, stack, allSites bool) (*Plan, error) {
	x, err := ParseExpr(text)
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
		return nil, fmt.Errorf("%w: %s is a pointer (%s *), not a flag or a number; watch one of its fields, e.g. %s->eof", ErrNotField, x.Text, pointee, x.Text)
	}
	field, err := ResolveField(bin, typeName, member)
	if err != nil {
		return nil, err
	}
	p := &Plan{Expr: x, Field: field, Mode: mode, Skipped: map[int]string{}, exact: map[*probes.Probe]bool{}, lines: map[int]int{}, dir: compDir(bin)}
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
		w, err := p.exactWatch(bin, x, allSites)
		if err != nil && (mode == Exact || !errors.Is(err, ErrNoSites)) {
			return nil, err
		}
		if w != nil {
			pr := &probes.Probe{Name: "watch " + x.Text, Function: &symbols.Function{Name: "watch", Symbol: "watch"}, Watch: w, Values: values(), Stack: stack}
			p.exact[pr] = true
			p.Probes = append(p.Probes, pr)
		}
	}
	if mode == Diff || mode == Both {
		if points == nil {
			points = DefaultDiffPoints
		}
		if err := p.diffProbes(bin, x, points, values, stack); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func memberTypeName(bin *symbols.Binary, typeName, member string) (string, error) {
	t, err := bin.Type(typeName)
	if err != nil {
		return "", err
	}
	ms, err := symbols.Members(t)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.Name == member {
			if pt, ok := symbols.Underlying(m.Type).(*dwarf.PtrType); ok && pt.Type != nil {
				return symbols.TypeName(pt.Type), nil
			}
			return "", fmt.Errorf("%w: %s.%s is not a pointer", ErrUnsupportedExpr, typeName, member)
		}
	}
	return "", fmt.Errorf("%w: %s has no member %s", symbols.ErrFieldNotFound, typeName, member)
}

func memberOffset(bin *symbols.Binary, typeName, member string) (int64, error) {
	t, err := bin.Type(typeName)
	if err != nil {
		return 0, err
	}
	ms, err := symbols.Members(t)
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		if m.Name == member {
			return m.ByteOffset(), nil
		}
	}
	return 0, fmt.Errorf("%w: %s has no member %s", symbols.ErrFieldNotFound, typeName, member)
}

// exactWatch finds the write sites and the pointer round trip that tells
// a connection's event (or the connection) from other memory.
func (p *Plan) exactWatch(bin *symbols.Binary, x Expr, allSites bool) (*probes.Watch, error) {
	res, err := Scan(bin, p.Field, &Options{DropMismatch: true})
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
	for i, s := range p.Sites {
		ws, why := watchSite(s)
		if why == "" && !allSites {
			why = wideStore(s, sameBaseLoad(bin, s))
		}
		if why != "" {
			p.Skipped[i] = why
			continue
		}
		p.Probed[i] = true
		w.Sites = append(w.Sites, ws)
	}
	if len(w.Sites) == 0 {
		return nil, fmt.Errorf("%w for %s (%s.%s) in %s; use diff mode (--mode diff), which compares the field at functions that read the connection", ErrNoSites, x.Text, p.Field.Type, p.Field.Member, bin.Path)
	}
	return w, nil
}

// watchSite converts a site for the BPF side; why says why it cannot be.
func watchSite(s Site) (probes.WatchSite, string) {
	ws := probes.WatchSite{FileOffset: s.FileOffset, Len: s.Len, BaseReg: s.Base, IndexReg: s.Index, Scale: s.Scale, BaseAt: s.BaseAt, SrcReg: -1}
	switch {
	case s.Global != "":
		// rip-relative: the object is at a fixed distance from the
		// instruction, whatever the load address.
		ws.BaseReg, ws.IndexReg = regRIP, NoReg
		ws.BaseAt = int64(s.Address) - int64(s.GlobalAddr)
	case s.Base == NoReg:
		return ws, "an absolute address: no base register to find the object"
	}
	e := s.Effect
	if !e.Valid {
		return ws, "" // compared before and after the instruction
	}
	ws.Modelled = true
	ws.Keep, ws.Set, ws.Flip, ws.Take = e.Keep, e.Set, e.Flip, e.Take
	if e.SrcReg != NoReg {
		ws.SrcReg, ws.SrcShift = e.SrcReg, e.SrcShift
		switch e.SrcOp {
		case ClearBits:
			ws.SrcOp = probes.SrcAnd
		case ToggleBits:
			ws.SrcOp = probes.SrcXor
		default:
			ws.SrcOp = probes.SrcOr
		}
	}
	return ws, ""
}

// wideStore says why a site is left out by default, or "". rmw tells a
// read-modify-write of the same word from a copy out of another object.
func wideStore(s Site, rmw bool) string {
	if s.Hint == HintMatch || s.Size < 8 || rmw {
		return ""
	}
	what := "store"
	if s.LoadAddr != 0 {
		what = "copy from another object"
	}
	return fmt.Sprintf("a %d-byte %s with no %s variable in its base register: likely another struct's pointer or counter (--all-sites probes it)", s.Size, what, s.Field.Type)
}

// sameBaseLoad reports whether the register a site stores was loaded from
// the very word it writes: a read-modify-write, as bitfield updates are.
func sameBaseLoad(bin *symbols.Binary, s Site) bool {
	if s.LoadAddr == 0 {
		return false
	}
	text := bin.ELF().Section(".text")
	if text == nil || s.LoadAddr < text.Addr || s.LoadAddr >= text.Addr+text.Size {
		return false
	}
	code := make([]byte, 16)
	n, _ := text.ReadAt(code, int64(s.LoadAddr-text.Addr))
	inst, err := x86asm.Decode(code[:n], 64)
	if err != nil {
		return false
	}
	for _, a := range inst.Args {
		if m, ok := a.(x86asm.Mem); ok {
			return dwarfReg(m.Base) == s.Base && dwarfReg(m.Index) == s.Index && m.Disp == s.Disp
		}
	}
	return false
}

// regRIP is the DWARF number of the return-address column, rip.
const regRIP = 16

func (p *Plan) diffProbes(bin *symbols.Binary, x Expr, points []DiffPoint, values func() []*symbols.Plan, stack bool) error {
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

// Decode turns an event of one of the plan's probes into a flip.
func (p *Plan) Decode(ev probes.Event) Flip {
	f := Flip{Field: p.Expr.Text, Mode: "diff"}
	num := func(i int) uint64 {
		if i < len(ev.Values) && ev.Values[i].Readable {
			switch v := ev.Values[i].JSON.(type) {
			case uint64:
				return v
			case int64:
				return uint64(v)
			}
		}
		return 0
	}
	site, prev := num(0), num(3)
	f.Old, f.New = num(1), num(2)
	for _, v := range ev.Values[min(4, len(ev.Values)):] {
		if !v.Readable {
			continue
		}
		switch v.Expr {
		case "conn":
			f.Conn = asInt(v.JSON)
		case "logged_as":
			f.LoggedAs = asInt(v.JSON)
		case "role":
			f.Role = "upstream"
			if s, ok := v.JSON.(string); ok && s != "0x0" {
				f.Role = "client"
			}
		case "client":
			if s, ok := v.JSON.(string); ok {
				f.Client = s
			}
		case "addr":
			if s, ok := v.JSON.(string); ok && f.Client == "" {
				f.Client = s
			}
		}
	}
	if f.Role == "client" {
		for _, v := range ev.Values[min(4, len(ev.Values)):] {
			if v.Expr == "addr" && v.Readable {
				f.Client, _ = v.JSON.(string)
			}
		}
	}
	if p.exact[ev.Probe] {
		f.Mode = "exact"
		if i := p.probedIndex(int(site)); i >= 0 {
			s := p.Sites[i]
			line, ok := p.lines[i]
			if !ok {
				line = writerLine(s, p.Field.Member, p.dir, os.ReadFile)
				p.lines[i] = line
			}
			f.Function, f.File, f.Line, f.Site = s.Function, s.File, line, s.Text
			if len(s.Frames) > 0 && s.Frames[0].Function != "" {
				f.Function = s.Frames[0].Function
			}
		}
		return f
	}
	if int(prev) < len(p.Points) {
		f.From = p.Points[prev]
	}
	if int(site) < len(p.Points) {
		f.To = p.Points[site]
	}
	// Seen old at F's entry, then new before F returned: the change
	// happened while F ran (in F or a function it called). Seen old at a
	// return or at a point without a return probe: in between.
	f.Function = ""
	if int(prev) < len(p.spans) && p.spans[prev] {
		f.Function = f.From
	}
	return f
}

// SiteOf returns the index in Sites of a probed site's cookie, or -1.
func (p *Plan) SiteOf(cookie int) int { return p.probedIndex(cookie) }

// probedIndex maps a cookie (the index among probed sites) to Sites.
func (p *Plan) probedIndex(cookie int) int {
	n := 0
	for i, ok := range p.Probed {
		if !ok {
			continue
		}
		if n == cookie {
			return i
		}
		n++
	}
	return -1
}

func asInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case uint64:
		return int64(n)
	}
	return 0
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// compDir is the build directory of the binary's first compile unit:
// where relative source paths in the line table start.
func compDir(bin *symbols.Binary) string {
	if bin.DWARF() == nil {
		return ""
	}
	e, err := bin.DWARF().Reader().Next()
	if err != nil || e == nil {
		return ""
	}
	dir, _ := e.Val(dwarf.AttrCompDir).(string)
	return dir
}

// writerLine picks, among the lines of a merged read-modify-write, the
// one that assigns the field, when the source is at hand; GCC attributes
// the combined store to the first statement of the sequence.
func writerLine(s Site, field, dir string, read func(string) ([]byte, error)) int {
	if len(s.Lines) < 2 || s.File == "" {
		return s.Line
	}
	path := s.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	src, err := read(path)
	if err != nil {
		return s.Line
	}
	lines := strings.Split(string(src), "\n")
	for _, n := range s.Lines {
		if n < 1 || n > len(lines) {
			continue
		}
		text := strings.ReplaceAll(lines[n-1], " ", "")
		if strings.Contains(text, "->"+field+"=") || strings.Contains(text, "."+field+"=") {
			return n
		}
	}
	return s.Line
}

// dwarfReg is the DWARF number of an address register, NoReg for none.
func dwarfReg(r x86asm.Reg) int {
	if r == 0 {
		return NoReg
	}
	n, _, _, ok := gpr(r)
	if !ok {
		return NoReg
	}
	return n
}
