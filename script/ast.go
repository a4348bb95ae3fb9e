package script

import "github.com/ngxprobe/ngxprobe/symbols"

// Expr is an expression. Member paths reuse the symbols package's nodes
// (Ident, MemberExpr, Index, Cast), so they compile to plans unchanged;
// the nodes below add literals and logic for filters.
type Expr = symbols.Path

// IntLit is an integer or character literal.
type IntLit struct {
	At    int
	Value int64
	Text  string
}

// StrLit is a string literal.
type StrLit struct {
	At    int
	Value string
}

// BinaryExpr is a comparison (==, !=, <, <=, >, >=) or a logical && / ||.
type BinaryExpr struct {
	At   int
	Op   string
	L, R Expr
}

// Not is !X.
type Not struct {
	At int
	X  Expr
}

func (e *IntLit) Pos() int     { return e.At }
func (e *StrLit) Pos() int     { return e.At }
func (e *BinaryExpr) Pos() int { return e.At }
func (e *Not) Pos() int        { return e.At }

// ProbeKind says where in a function a probe fires.
type ProbeKind int

const (
	AtEntry  ProbeKind = iota // FUNCTION
	AtReturn                  // FUNCTION%return
	AtOffset                  // FUNCTION+OFFSET
	AtLine                    // FILE:LINE
)

// ProbePoint is one attach point as written: ngx_unix_recv%return,
// ngx_unix_recv+0x1a or src/os/unix/ngx_recv.c:57.
type ProbePoint struct {
	At       int
	Text     string
	Kind     ProbeKind
	Function string // AtEntry, AtReturn, AtOffset
	Offset   uint64 // AtOffset
	File     string // AtLine
	Line     int    // AtLine
}

// Probe is a probe block: its points, an optional filter and its body.
type Probe struct {
	At     int
	Points []ProbePoint
	Filter Expr // nil: every hit
	Body   []Stmt
}

// Stmt is a statement in a probe body.
type Stmt interface{ Pos() int }

// Let names a sub-expression for the rest of the probe, and for its filter.
type Let struct {
	At   int
	Name string
	X    Expr
}

// PrintArg is one value of print: NAME = EXPR, or EXPR named by its text.
type PrintArg struct {
	Name string
	X    Expr
	Text string // the expression's source text
}

// Print prints values with type-aware formatting. A Label puts them on
// an output line of their own: print("client read", eof = c->read->eof).
type Print struct {
	At    int
	Label string
	Args  []PrintArg
}

// Printf prints a formatted message.
type Printf struct {
	At     int
	Format string
	Args   []PrintArg
}

// Stack captures and prints the user stack.
type Stack struct{ At int }

// Aggregate is @name[keys...] = fn(arg): counted in the kernel, printed at exit.
type Aggregate struct {
	At   int
	Map  string
	Keys []PrintArg
	Func string // count, sum, min, max, avg
	Arg  Expr   // nil for count
	// ArgText is the argument's source text.
	ArgText string
}

func (s *Let) Pos() int       { return s.At }
func (s *Print) Pos() int     { return s.At }
func (s *Printf) Pos() int    { return s.At }
func (s *Stack) Pos() int     { return s.At }
func (s *Aggregate) Pos() int { return s.At }

// Define is a top-level named expression, shared by every probe (and by
// files that include this one). Names in it resolve in each probe.
type Define struct {
	At   int
	Name string
	X    Expr
}

// Script is a parsed probe set: its files (the main one and includes),
// definitions and probes, in source order.
type Script struct {
	Files   *FileSet
	Defines []*Define
	Probes  []*Probe
	Watches []*Watch
}

// Watch is watch [exact|diff|both] EXPR: report where and when a field of
// a connection flips (see package watch).
type Watch struct {
	At   int
	Mode string // exact (default), diff or both
	Expr string
}
