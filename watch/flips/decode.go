package flips

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
)

// Flip is a decoded change of the watched field.
type Flip struct {
	Mode     string // exact or diff
	Field    string
	Old      uint64
	New      uint64
	Conn     int64
	Role     string // client or upstream
	LoggedAs int64
	Client   string
	Function string
	File     string
	Line     int
	// Site is the write instruction (exact mode).
	Site string
	// From and To are the probe points that saw the old and the new value
	// (diff mode); equal functions mean the change happened inside it.
	From string
	To   string
}

// Decode turns an event of one of the program's probes into a flip.
func (p *Program) Decode(ev probes.Event) Flip {
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
			// A client connection has a listening socket.
			f.Role = "upstream"
			if ls, ok := v.JSON.(symbols.Pointer); ok && ls != 0 {
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
func (p *Program) SiteOf(cookie int) int { return p.probedIndex(cookie) }

// probedIndex maps a cookie (the index among probed sites) to Sites.
func (p *Program) probedIndex(cookie int) int {
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

// writerLine picks, among the lines of a merged read-modify-write, the
// one that assigns the field, when the source is at hand; GCC attributes
// the combined store to the first statement of the sequence.
func writerLine(s watch.Site, field, dir string, read func(string) ([]byte, error)) int {
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
