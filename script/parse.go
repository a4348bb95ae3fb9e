package script

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// maxIncludeDepth stops include chains long before they matter.
const maxIncludeDepth = 16

// maxNesting bounds parentheses and operators, so that hostile input
// cannot exhaust the stack.
const maxNesting = 200

// ReadFunc reads an included file; os.ReadFile by default.
type ReadFunc func(path string) ([]byte, error)

// ParseFile parses the script at path and the files it includes.
func ParseFile(path string, read ReadFunc) (*Script, error) {
	if read == nil {
		read = os.ReadFile
	}
	src, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInclude, err)
	}
	return parse(path, string(src), read)
}

// ParseText parses a script given as text (ngxprobe -e); name labels
// positions. Includes resolve against the working directory.
func ParseText(name, text string, read ReadFunc) (*Script, error) {
	if read == nil {
		read = os.ReadFile
	}
	return parse(name, text, read)
}

func parse(name, src string, read ReadFunc) (*Script, error) {
	s := &Script{Files: NewFileSet()}
	st := &parseState{script: s, read: read, included: map[string]bool{}}
	st.file(name, src, 0)
	if len(st.errs) > 0 {
		return nil, st.errs
	}
	return s, nil
}

type parseState struct {
	script   *Script
	read     ReadFunc
	included map[string]bool
	errs     ErrorList
}

func (st *parseState) file(name, src string, depth int) {
	abs, err := filepath.Abs(name)
	if err == nil {
		st.included[abs] = true
	}
	p := &parser{st: st, src: src, base: st.script.Files.add(name, src), name: name, depth: depth}
	p.parseFile()
}

type parser struct {
	st    *parseState
	src   string
	base  int
	pos   int // offset in src
	last  int // offset after the last token, where an expression's text ends
	name  string
	depth int // include depth
	nest  int
}

// bail unwinds the parser at the first syntax error in a file: later
// errors would only echo it.
type bail struct{}

func (p *parser) at() int { return p.base + p.pos }

func (p *parser) errorAt(off int, format string, args ...any) {
	if off >= len(p.src) {
		// At the end of the file, point just after the last text rather
		// than at an empty line after it.
		off = len(strings.TrimRight(p.src, " \t\r\n"))
	}
	p.st.errs = append(p.st.errs, &Error{Pos: p.st.script.Files.Position(p.base + off), Msg: fmt.Sprintf(format, args...), Err: ErrSyntax})
	panic(bail{})
}

func (p *parser) errorf(format string, args ...any) { p.errorAt(p.pos, format, args...) }

func (p *parser) parseFile() {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(bail); !ok {
				panic(r)
			}
		}
	}()
	for {
		p.space()
		if p.pos >= len(p.src) {
			return
		}
		switch {
		case p.keyword("include"):
			p.include()
		case p.keyword("define"):
			p.define()
		case p.keyword("watch"):
			p.watch()
		default:
			p.probe()
		}
	}
}

// space skips blanks and comments: # and // to the end of the line, /* */.
func (p *parser) space() {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			p.pos++
		case c == '#' || strings.HasPrefix(p.src[p.pos:], "//"):
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case strings.HasPrefix(p.src[p.pos:], "/*"):
			end := strings.Index(p.src[p.pos+2:], "*/")
			if end < 0 {
				p.errorf("comment not closed: add */")
			}
			p.pos += 2 + end + 2
		default:
			return
		}
	}
}

// keyword consumes word if it is next and is a whole word.
func (p *parser) keyword(word string) bool {
	p.space()
	if !strings.HasPrefix(p.src[p.pos:], word) {
		return false
	}
	end := p.pos + len(word)
	if end < len(p.src) && isIdentByte(p.src[end], true) {
		return false
	}
	p.pos = end
	return true
}

func isIdentByte(c byte, notFirst bool) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || notFirst && c >= '0' && c <= '9'
}

func (p *parser) peek(s string) bool {
	p.space()
	return strings.HasPrefix(p.src[p.pos:], s)
}

func (p *parser) accept(s string) bool {
	if p.peek(s) {
		p.pos += len(s)
		p.last = p.pos
		return true
	}
	return false
}

func (p *parser) expect(s, what string) {
	if !p.accept(s) {
		p.errorf("expected %q %s, found %s", s, what, p.found())
	}
}

func (p *parser) found() string {
	p.space()
	if p.pos >= len(p.src) {
		return "the end of the file"
	}
	_, n := utf8.DecodeRuneInString(p.src[p.pos:])
	end := p.pos + n
	if isIdentByte(p.src[p.pos], false) {
		for end < len(p.src) && isIdentByte(p.src[end], true) {
			end++
		}
	}
	return strconv.Quote(p.src[p.pos:end])
}

func (p *parser) ident() (string, int, bool) {
	p.space()
	start := p.pos
	for p.pos < len(p.src) && isIdentByte(p.src[p.pos], p.pos > start) {
		p.pos++
	}
	if p.pos > start {
		p.last = p.pos
	}
	return p.src[start:p.pos], p.base + start, p.pos > start
}

func (p *parser) needIdent(what string) (string, int) {
	name, at, ok := p.ident()
	if !ok {
		p.errorf("expected %s, found %s", what, p.found())
	}
	return name, at
}

func (p *parser) include() {
	p.space()
	at := p.pos
	lit := p.stringLit()
	p.accept(";")
	if p.depth >= maxIncludeDepth {
		p.errorAt(at, "includes nested deeper than %d", maxIncludeDepth)
	}
	path := lit.Value
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(p.name), path)
	}
	abs, err := filepath.Abs(path)
	if err == nil && p.st.included[abs] {
		return // included already: definitions are shared once
	}
	src, err := p.st.read(path)
	if err != nil {
		p.st.errs = append(p.st.errs, &Error{Pos: p.st.script.Files.Position(p.base + at), Msg: fmt.Sprintf("include %q: %v", lit.Value, err), Hint: "paths are relative to the including file", Err: errors.Join(ErrInclude, err)})
		return
	}
	p.st.file(path, string(src), p.depth+1)
}

func (p *parser) define() {
	name, at := p.needIdent("a name after define")
	p.expect("=", "after the defined name")
	x := p.expr()
	p.accept(";")
	p.st.script.Defines = append(p.st.script.Defines, &Define{At: at, Name: name, X: x})
}

// watch parses watch [exact|diff|both] EXPR, the expression up to the end
// of the line or a ;.
func (p *parser) watch() {
	w := &Watch{Mode: "exact"}
	for _, m := range []string{"exact", "diff", "both"} {
		if p.keyword(m) {
			w.Mode = m
		}
	}
	p.space()
	w.At = p.at()
	start := p.pos
	for p.pos < len(p.src) && p.src[p.pos] != '\n' && p.src[p.pos] != ';' && p.src[p.pos] != '#' && !strings.HasPrefix(p.src[p.pos:], "//") {
		p.pos++
	}
	w.Expr = strings.TrimSpace(p.src[start:p.pos])
	if w.Expr == "" {
		p.errorAt(start, "watch needs a field of the connection c, e.g. watch c->read->eof")
	}
	p.accept(";")
	p.st.script.Watches = append(p.st.script.Watches, w)
}

// probe parses POINT[, POINT...] [/FILTER/] { BODY }.
func (p *parser) probe() {
	p.space()
	pr := &Probe{At: p.at()}
	for {
		pr.Points = append(pr.Points, p.point())
		if !p.accept(",") {
			break
		}
	}
	if p.accept("/") {
		pr.Filter = p.expr()
		p.expect("/", "to end the filter")
	}
	p.expect("{", "to open the probe body")
	open := p.pos - 1
	for !p.accept("}") {
		if p.pos >= len(p.src) {
			p.errorAt(open, "probe body not closed: add a } to match this {")
		}
		if p.accept(";") {
			continue
		}
		pr.Body = append(pr.Body, p.statement())
	}
	p.st.script.Probes = append(p.st.script.Probes, pr)
}

// point parses FUNCTION, FUNCTION%return, FUNCTION+OFFSET or FILE:LINE.
func (p *parser) point() ProbePoint {
	p.space()
	start := p.pos
	for p.pos < len(p.src) && isPointByte(p.src[p.pos]) {
		p.pos++
	}
	text := p.src[start:p.pos]
	pt := ProbePoint{At: p.base + start, Text: text}
	if text == "" {
		p.errorf("expected a probe point (FUNCTION, FUNCTION%%return, FUNCTION+OFFSET or FILE:LINE), found %s", p.found())
	}
	// MODULE:FUNCTION names a function of one module; FILE:LINE a line.
	module, rest := symbols.SplitQualified(text)
	if _, err := strconv.Atoi(rest); module != "" && err == nil {
		module, rest = "", text
	}
	if file, line, ok := strings.Cut(rest, ":"); ok && module == "" {
		n, err := strconv.Atoi(line)
		if err != nil || n <= 0 || file == "" {
			p.errorAt(start, "%q: a line probe is FILE:LINE with a positive line number, e.g. src/os/unix/ngx_recv.c:57", text)
		}
		pt.Kind, pt.File, pt.Line = AtLine, file, n
		return pt
	}
	if strings.HasSuffix(rest, ".c") || strings.HasSuffix(rest, ".h") {
		p.errorAt(start, "%q is a source file: a line probe needs its line number, e.g. %s:57", text, text)
	}
	if strings.Contains(rest, "/") {
		p.errorAt(start, "%q: a file needs a line number (FILE:LINE); a filter needs a space before its /", text)
	}
	skip := len(text) - len(rest) // the module qualifier
	if fn, ok := strings.CutSuffix(rest, "%return"); ok {
		pt.Kind, pt.Function = AtReturn, fn
	} else if fn, off, ok := strings.Cut(rest, "+"); ok {
		n, err := strconv.ParseUint(off, 0, 64)
		if err != nil {
			p.errorAt(start+skip+len(fn)+1, "%q: the offset must be a number, e.g. %s+0x1a", off, fn)
		}
		pt.Kind, pt.Function, pt.Offset = AtOffset, fn, n
	} else {
		pt.Kind, pt.Function = AtEntry, rest
	}
	if pt.Function == "" || !validSymbol(pt.Function) {
		p.errorAt(start, "%q is not a function name", text)
	}
	if module != "" {
		pt.Function = module + ":" + pt.Function
	}
	return pt
}

func isPointByte(c byte) bool {
	return isIdentByte(c, true) || c == '.' || c == '/' || c == '-' || c == '+' || c == '%' || c == ':'
}

// validSymbol accepts C names with GCC clone suffixes (.isra.0).
func validSymbol(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isIdentByte(s[i], i > 0) && !(i > 0 && s[i] == '.') {
			return false
		}
	}
	return true
}

func (p *parser) statement() Stmt {
	p.space()
	at := p.at()
	switch {
	case p.peek("@"):
		return p.aggregate()
	case p.keyword("print"):
		p.expect("(", "after print")
		s := &Print{At: at}
		p.space()
		if p.peek("\"") {
			// A leading string is the line's label, not a value.
			s.Label = p.stringLit().Value
			if !p.accept(")") {
				p.expect(",", "after print's label")
				if p.peek(")") {
					p.errorf("expected a value after print's label, found %s", p.found())
				}
				s.Args = p.args(true)
			}
			return s
		}
		s.Args = p.args(true)
		return s
	case p.keyword("printf"):
		p.expect("(", "after printf")
		lit := p.stringLit()
		s := &Printf{At: at, Format: lit.Value}
		if p.accept(",") {
			s.Args = p.args(false)
		} else {
			p.expect(")", "to close printf")
		}
		return s
	case p.keyword("stack"), p.keyword("ustack"):
		if p.accept("(") {
			p.expect(")", "after stack(")
		}
		return &Stack{At: at}
	}
	name, nameAt, ok := p.ident()
	if ok && p.peek("=") && !p.peek("==") {
		p.pos++
		return &Let{At: nameAt, Name: name, X: p.expr()}
	}
	if ok {
		p.errorAt(nameAt-p.base, "unknown statement %q: expected print(...), printf(...), stack, @name[keys] = count(), or NAME = EXPR", name)
	}
	p.errorf("expected a statement, found %s", p.found())
	return nil
}

// args parses a comma list up to ")"; named allows NAME = EXPR.
func (p *parser) args(named bool) []PrintArg {
	var out []PrintArg
	if p.accept(")") {
		return out
	}
	for {
		p.space()
		save := p.pos
		var a PrintArg
		if named {
			if name, _, ok := p.ident(); ok && p.peek("=") && !p.peek("==") {
				p.pos++
				a.Name = name
			} else {
				p.pos = save
			}
		}
		p.space()
		from := p.at()
		a.X = p.expr()
		a.Text = p.textFrom(from)
		if a.Name == "" {
			a.Name = a.Text
		}
		out = append(out, a)
		if p.accept(")") {
			return out
		}
		p.expect(",", "between arguments")
	}
}

var aggregateFuncs = []string{"count", "sum", "min", "max", "avg"}

func (p *parser) aggregate() Stmt {
	at := p.at()
	p.pos++ // @
	name := ""
	if p.pos < len(p.src) && isIdentByte(p.src[p.pos], false) {
		name, _, _ = p.ident()
	}
	s := &Aggregate{At: at, Map: name}
	if p.accept("[") {
		for {
			p.space()
			from := p.at()
			x := p.expr()
			s.Keys = append(s.Keys, PrintArg{X: x, Text: p.textFrom(from)})
			s.Keys[len(s.Keys)-1].Name = s.Keys[len(s.Keys)-1].Text
			if p.accept("]") {
				break
			}
			p.expect(",", "between keys")
		}
	}
	p.expect("=", "after the map")
	fn, fnAt := p.needIdent("an aggregation: count(), sum(X), min(X), max(X) or avg(X)")
	known := false
	for _, f := range aggregateFuncs {
		known = known || f == fn
	}
	if !known {
		if hint := symbols.Closest(fn, aggregateFuncs, 2); len(hint) > 0 {
			p.errorAt(fnAt-p.base, "unknown aggregation %q; did you mean %s? (count, sum, min, max, avg)", fn, strings.Join(hint, " or "))
		}
		p.errorAt(fnAt-p.base, "unknown aggregation %q: use count(), sum(X), min(X), max(X) or avg(X)", fn)
	}
	s.Func = fn
	p.expect("(", "after "+fn)
	if fn == "count" {
		p.expect(")", "count takes no argument:")
		return s
	}
	p.space()
	from := p.at()
	s.Arg = p.expr()
	s.ArgText = p.textFrom(from)
	p.expect(")", "to close "+fn)
	return s
}

// textFrom is the source of the expression that starts at from (a
// position) and ends with the last token: what output names it by,
// without the blanks and comments after it.
func (p *parser) textFrom(from int) string {
	return strings.TrimSpace(p.st.script.Files.Text(from, p.base+p.last))
}

func (p *parser) stringLit() *StrLit {
	p.space()
	at := p.pos
	if !p.accept(`"`) {
		p.errorf("expected a string in double quotes, found %s", p.found())
	}
	var b strings.Builder
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			p.errorAt(at, "string not closed: add \"")
		}
		c := p.src[p.pos]
		if c == '"' {
			p.pos++
			p.last = p.pos
			return &StrLit{At: p.base + at, Value: b.String()}
		}
		if c == '\\' {
			b.WriteByte(p.escape())
			continue
		}
		b.WriteByte(c)
		p.pos++
	}
}

// escape reads \n, \t, \\, \", \', \0 and \xHH.
func (p *parser) escape() byte {
	at := p.pos
	p.pos++
	if p.pos >= len(p.src) {
		p.errorAt(at, "escape at the end of the text")
	}
	c := p.src[p.pos]
	p.pos++
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '0':
		return 0
	case '\\', '"', '\'':
		return c
	case 'x':
		if p.pos+2 <= len(p.src) {
			if v, err := strconv.ParseUint(p.src[p.pos:p.pos+2], 16, 8); err == nil {
				p.pos += 2
				return byte(v)
			}
		}
	}
	p.errorAt(at, "unknown escape \\%c: use \\n, \\t, \\r, \\0, \\\\, \\\", \\' or \\xHH", c)
	return 0
}

// Expressions, loosest first: ||, &&, comparisons, unary.

func (p *parser) enter() {
	p.nest++
	if p.nest > maxNesting {
		p.errorf("expression nested deeper than %d", maxNesting)
	}
}

func (p *parser) leave() { p.nest-- }

func (p *parser) expr() Expr {
	p.enter()
	defer p.leave()
	x := p.and()
	for {
		p.space()
		at := p.at()
		if !p.accept("||") {
			return x
		}
		x = &BinaryExpr{At: at, Op: "||", L: x, R: p.and()}
	}
}

func (p *parser) and() Expr {
	x := p.comparison()
	for {
		p.space()
		at := p.at()
		if !p.accept("&&") {
			return x
		}
		x = &BinaryExpr{At: at, Op: "&&", L: x, R: p.comparison()}
	}
}

var comparisons = []string{"==", "!=", "<=", ">=", "<", ">"}

func (p *parser) comparison() Expr {
	x := p.unary()
	p.space()
	at := p.at()
	for _, op := range comparisons {
		if p.accept(op) {
			y := p.unary()
			p.space()
			for _, again := range comparisons {
				if p.peek(again) {
					p.errorf("comparisons do not chain: join them with && or add parentheses")
				}
			}
			return &BinaryExpr{At: at, Op: op, L: x, R: y}
		}
	}
	if p.peek("=") {
		p.errorf("'=' is not a comparison: use '=='")
	}
	return x
}

func (p *parser) unary() Expr {
	p.enter()
	defer p.leave()
	p.space()
	at := p.at()
	switch {
	case p.accept("!"):
		return &Not{At: at, X: p.unary()}
	case p.peek("-") && !p.peek("->"):
		p.pos++
		p.space()
		lit, ok := p.number()
		if !ok {
			p.errorf("'-' applies to number literals only")
		}
		if lit.Value < 0 && lit.Value != math.MinInt64 {
			p.errorAt(lit.At-p.base, "-%s is out of range: the smallest number is -9223372036854775808", lit.Text)
		}
		lit.At, lit.Value, lit.Text = at, -lit.Value, "-"+lit.Text
		return lit
	case p.peek("("):
		save := p.pos
		p.pos++
		if name, ptrs, ok := p.typeName(); ok {
			return &symbols.CastExpr{At: at, TypeName: name, Pointers: ptrs, X: p.unary()}
		}
		p.pos = save
	}
	return p.postfix()
}

var baseTypeWords = map[string]bool{"char": true, "short": true, "int": true, "long": true, "unsigned": true, "signed": true, "void": true}

// typeName tries "TYPE *...)" after "(": a type is struct/union/enum X,
// C base type words, a name ending in _t, or any name followed by *.
// Parsing needs no binary; the checker reports unknown types.
func (p *parser) typeName() (string, int, bool) {
	save := p.pos
	fail := func() (string, int, bool) { p.pos = save; return "", 0, false }
	word, _, ok := p.ident()
	if !ok {
		return fail()
	}
	name := word
	isType := strings.HasSuffix(word, "_t")
	switch {
	case word == "struct" || word == "union" || word == "enum":
		tag, _, ok := p.ident()
		if !ok {
			return fail()
		}
		name, isType = word+" "+tag, true
	case baseTypeWords[word]:
		isType = true
		for {
			p.space()
			s := p.pos
			w, _, ok := p.ident()
			if !ok || !baseTypeWords[w] {
				p.pos = s
				break
			}
			name += " " + w
		}
	}
	ptrs := 0
	for p.accept("*") {
		ptrs++
	}
	if !p.peek(")") || (ptrs == 0 && !isType) {
		return fail()
	}
	p.pos++
	return name, ptrs, true
}

func (p *parser) postfix() Expr {
	x := p.primary()
	for {
		p.space()
		at := p.at()
		switch {
		case p.accept("->"):
			name, nameAt := p.needIdent("a member name after ->")
			x = &symbols.MemberExpr{At: at, NameAt: nameAt, X: x, Name: name, Arrow: true}
		case p.peek(".") && !p.peek(".."):
			p.pos++
			name, nameAt := p.needIdent("a member name after .")
			x = &symbols.MemberExpr{At: at, NameAt: nameAt, X: x, Name: name}
		case p.accept("["):
			p.space()
			lit, ok := p.number()
			if !ok {
				p.errorf("an index must be a number literal: ngxprobe reads fixed offsets")
			}
			p.expect("]", "after the index")
			x = &symbols.IndexExpr{At: at, X: x, N: lit.Value}
		default:
			return x
		}
	}
}

func (p *parser) primary() Expr {
	p.space()
	at := p.at()
	if p.pos >= len(p.src) {
		p.errorf("expected an expression, found the end of the file")
	}
	c := p.src[p.pos]
	switch {
	case c == '(':
		p.pos++
		x := p.expr()
		p.expect(")", "to close (")
		return x
	case c == '"':
		return p.stringLit()
	case c == '\'':
		return p.charLit()
	case c >= '0' && c <= '9':
		lit, _ := p.number()
		return lit
	case isIdentByte(c, false):
		name, _, _ := p.ident()
		return &symbols.Ident{At: at, Name: name}
	}
	p.errorf("expected an expression, found %s", p.found())
	return nil
}

func (p *parser) number() (*IntLit, bool) {
	start := p.pos
	if p.pos >= len(p.src) || p.src[p.pos] < '0' || p.src[p.pos] > '9' {
		return nil, false
	}
	for p.pos < len(p.src) && (unicode.IsDigit(rune(p.src[p.pos])) || isIdentByte(p.src[p.pos], true)) {
		p.pos++
	}
	text := p.src[start:p.pos]
	if text == "" {
		return nil, false
	}
	p.last = p.pos
	v, err := strconv.ParseInt(strings.TrimRight(text, "uUlL"), 0, 64)
	if err != nil {
		u, uerr := strconv.ParseUint(strings.TrimRight(text, "uUlL"), 0, 64)
		if uerr != nil {
			p.errorAt(start, "%q is not a number", text)
		}
		v = int64(u)
	}
	return &IntLit{At: p.base + start, Value: v, Text: text}, true
}

func (p *parser) charLit() *IntLit {
	at := p.pos
	p.pos++
	if p.pos >= len(p.src) {
		p.errorAt(at, "character literal not closed")
	}
	var v byte
	if p.src[p.pos] == '\\' {
		v = p.escape()
	} else {
		v = p.src[p.pos]
		p.pos++
	}
	if p.pos >= len(p.src) || p.src[p.pos] != '\'' {
		p.errorAt(at, "a character literal holds one character, e.g. 'G'")
	}
	p.pos++
	p.last = p.pos
	return &IntLit{At: p.base + at, Value: int64(v), Text: p.src[at:p.pos]}
}
