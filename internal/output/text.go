package output

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Text prints events as blocks: a header line, then one line per group
// of values, printf lines and the stack, as the incident notes do. Every
// string it writes is escaped (see Escape): values, messages, names from
// the binary and paths alike.
type Text struct {
	W io.Writer
	// buf is the block being written, groups its groups of values, and
	// groupOf the group of each value (-1 for a hidden one), kept
	// between calls.
	buf     []byte
	groups  []textGroup
	groupOf []int
}

// textGroup is one output line of an event's values.
type textGroup struct {
	name     string
	readable bool // some value of the group is
}

const timeLayout = "15:04:05.000000"

// Event writes a header line, then one line per group of values. A group
// whose values are all unreadable (no upstream yet, say) is shown as "-"
// rather than as a row of question marks.
func (p *Text) Event(ev Event) error {
	b := appendClock(p.buf[:0], ev.Time)
	b = append(b, ' ')
	b = appendEscape(b, ev.Probe, "")
	b = append(b, " pid "...)
	b = strconv.AppendUint(b, uint64(ev.PID), 10)
	if ev.TID != ev.PID {
		b = append(b, " tid "...)
		b = strconv.AppendUint(b, uint64(ev.TID), 10)
	}
	if ev.Clone {
		b = append(b, " ("...)
		b = appendEscape(b, ev.Function, "")
		b = append(b, ')')
	}
	b = append(b, '\n')
	b = appendOrigin16(b, ev.Origin)
	// The groups in the order their first values come; an event has a
	// handful, so they are looked up by scanning.
	groups, groupOf := p.groups[:0], p.groupOf[:0]
	for i := range ev.Values {
		v := &ev.Values[i]
		g := -1
		switch {
		case v.Hidden:
		case len(groups) > 0 && groups[len(groups)-1].name == v.Group:
			g = len(groups) - 1 // as a print lists them
		default:
			if g = findGroup(groups, v.Group); g < 0 {
				groups = append(groups, textGroup{name: v.Group})
				g = len(groups) - 1
			}
		}
		if g >= 0 {
			groups[g].readable = groups[g].readable || v.Readable
		}
		groupOf = append(groupOf, g)
	}
	// Sub-groups ("client read") print under their parent's line when
	// the parent is unreadable as a whole.
	for gi := range groups {
		g := &groups[gi]
		if !g.readable {
			if parent, _, ok := strings.Cut(g.name, " "); ok {
				if pi := findGroup(groups, parent); pi < 0 || !groups[pi].readable {
					continue
				}
			}
			b = appendLabel(b, g.name)
			b = append(b, " -\n"...)
			continue
		}
		b = appendLabel(b, g.name)
		b = append(b, ' ')
		first := true
		for i := range ev.Values {
			if groupOf[i] != gi {
				continue
			}
			v := &ev.Values[i]
			if !first {
				b = append(b, ' ')
			}
			first = false
			b = appendEscape(b, v.Name, "")
			b = append(b, '=')
			switch {
			case !v.Readable:
				b = append(b, '?')
			case v.Display == Connection:
				b = append(b, '*')
				b = appendEscape(b, v.Text, "")
			default:
				b = appendEscape(b, v.Text, "")
			}
		}
		b = append(b, '\n')
	}
	clear(groups)
	p.groups, p.groupOf = groups[:0], groupOf[:0]
	for _, m := range ev.Messages {
		m = strings.TrimSuffix(m, "\n")
		for {
			line, rest, more := strings.Cut(m, "\n")
			b = append(b, "  "...)
			b = appendEscape(b, line, "\t")
			b = append(b, '\n')
			if !more {
				break
			}
			m = rest
		}
	}
	b = appendStackText(b, ev.Stack)
	return p.write(b)
}

// write writes a block made in the printer's buffer, and keeps the
// buffer.
func (p *Text) write(b []byte) error {
	_, err := p.W.Write(b)
	if cap(b) <= maxKeptBuf {
		p.buf = b[:0]
	} else {
		p.buf = nil
	}
	return err
}

func findGroup(groups []textGroup, name string) int {
	for i := range groups {
		if groups[i].name == name {
			return i
		}
	}
	return -1
}

// appendClock appends t as timeLayout formats it.
func appendClock(b []byte, t time.Time) []byte {
	h, m, s := t.Clock()
	us := t.Nanosecond() / 1000
	return append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10), ':', byte('0'+s/10), byte('0'+s%10), '.',
		byte('0'+us/100000), byte('0'+us/10000%10), byte('0'+us/1000%10), byte('0'+us/100%10), byte('0'+us/10%10), byte('0'+us%10))
}

// appendLabel appends "  " and a group's label, padded as %-16s.
func appendLabel(b []byte, g string) []byte {
	b = append(b, "  "...)
	start := len(b)
	if g == "" {
		b = append(b, "values:"...)
	} else {
		b = appendEscape(b, g, "")
		b = append(b, ':')
	}
	for n := utf8.RuneCount(b[start:]); n < 16; n++ {
		b = append(b, ' ')
	}
	return b
}

// writeOrigin says which nginx a hit came from: its master, container
// and pod.
func writeOrigin(b *strings.Builder, o *Origin) {
	b.Write(appendOrigin16(nil, o))
}

// appendOrigin16 appends what writeOrigin writes.
func appendOrigin16(b []byte, o *Origin) []byte {
	if o == nil {
		return b
	}
	b = append(b, "  nginx:           master "...)
	b = strconv.AppendInt(b, int64(o.MasterPID), 10)
	b = append(b, ' ')
	b = appendEscape(b, o.Binary, "")
	if o.ContainerID != "" {
		b = append(b, " container "...)
		b = appendEscape(b, o.ContainerID[:min(12, len(o.ContainerID))], "")
	}
	if o.PodName != "" {
		b = append(b, " pod "...)
		b = appendEscape(b, o.PodNamespace, "")
		b = append(b, '/')
		b = appendEscape(b, o.PodName, "")
		if o.ContainerName != "" {
			b = append(b, " ("...)
			b = appendEscape(b, o.ContainerName, "")
			b = append(b, ')')
		}
	}
	return append(b, '\n')
}

// Flip writes the flip, where it happened, and its stack.
func (p *Text) Flip(f Flip) error {
	b := appendClock(p.buf[:0], f.Time)
	b = append(b, " pid "...)
	b = strconv.AppendUint(b, uint64(f.PID), 10)
	b = append(b, " flip "...)
	b = appendEscape(b, f.Field, "")
	b = append(b, ' ')
	b = strconv.AppendUint(b, f.Old, 10)
	b = append(b, " -> "...)
	b = strconv.AppendUint(b, f.New, 10)
	b = append(b, "  conn *"...)
	b = strconv.AppendInt(b, f.Conn, 10)
	b = append(b, ' ')
	b = appendEscape(b, f.Role, "")
	switch {
	case f.Role == "upstream" && f.LoggedAs != f.Conn:
		b = append(b, " (of *"...)
		b = strconv.AppendInt(b, f.LoggedAs, 10)
		if f.Client != "" {
			b = append(b, ", client "...)
			b = appendEscape(b, f.Client, "")
		}
		b = append(b, ')')
	case f.Client != "":
		b = append(b, " (client "...)
		b = appendEscape(b, f.Client, "")
		b = append(b, ')')
	}
	b = append(b, " ["...)
	b = appendEscape(b, f.Mode, "")
	b = append(b, "]\n"...)
	b = appendOrigin16(b, f.Origin)
	switch {
	case f.Mode == "exact":
		b = append(b, "  at "...)
		b = appendEscape(b, f.File, "")
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(f.Line), 10)
		b = append(b, " in "...)
		b = appendEscape(b, f.Function, "")
		b = append(b, " ("...)
		b = appendEscape(b, f.Site, "")
		b = append(b, ")\n"...)
	case f.Function != "":
		b = append(b, "  inside "...)
		b = appendEscape(b, f.Function, "")
		b = append(b, " (seen at "...)
		b = appendEscape(b, f.From, "")
		b = append(b, ", then at "...)
		b = appendEscape(b, f.To, "")
		b = append(b, ")\n"...)
	default:
		b = append(b, "  between "...)
		b = appendEscape(b, f.From, "")
		b = append(b, " and "...)
		b = appendEscape(b, f.To, "")
		b = append(b, '\n')
	}
	b = appendStackText(b, f.Stack)
	return p.write(b)
}

// writeStack prints frames as the incident notes do: module address,
// symbol+offset, then file:line, or the module for code without DWARF.
func writeStack(b *strings.Builder, st *Stack) {
	b.Write(appendStackText(nil, st))
}

// appendStackText appends what writeStack writes.
func appendStackText(b []byte, st *Stack) []byte {
	if st == nil {
		return b
	}
	b = append(b, "  stack:\n"...)
	for i := range st.Frames {
		f := &st.Frames[i]
		if f.Lua != nil {
			b = append(b, "              [lua] "...)
			b = appendEscape(b, f.Lua.Text, "")
			b = append(b, '\n')
			continue
		}
		b = append(b, "    "...)
		b = appendRight8Hex(b, f.Address)
		b = append(b, ": "...)
		switch {
		case f.Symbol == "":
			b = append(b, "??"...)
		case f.Inlined:
			b = appendEscape(b, f.Symbol, "")
			b = append(b, " (inlined)"...)
		default:
			b = appendEscape(b, f.Symbol, "")
			b = append(b, "+0x"...)
			b = strconv.AppendUint(b, f.Offset, 16)
		}
		b = append(b, " ("...)
		if f.File != "" {
			b = appendEscape(b, f.File, "")
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(f.Line), 10)
		} else {
			b = appendEscape(b, f.Module, "")
		}
		b = append(b, ")\n"...)
	}
	if st.Truncated {
		b = append(b, "    ... truncated: "...)
		b = appendEscape(b, st.Reason, "")
		b = append(b, '\n')
	}
	for _, n := range st.Notes {
		b = append(b, "    note: "...)
		b = appendEscape(b, n, "")
		b = append(b, '\n')
	}
	return b
}

// appendRight8Hex appends n in hexadecimal, right-aligned in 8 columns,
// as %8x.
func appendRight8Hex(b []byte, n uint64) []byte {
	var d [16]byte
	h := strconv.AppendUint(d[:0], n, 16)
	for i := len(h); i < 8; i++ {
		b = append(b, ' ')
	}
	return append(b, h...)
}

// Aggregates writes each aggregation as bpftrace does: @name[keys]: value.
func (p *Text) Aggregates(aggs []Aggregate) error {
	var b strings.Builder
	for _, a := range aggs {
		rows, keys := MergedRows(a)
		fmt.Fprintf(&b, "\n@%s (%s)", Escape(a.Name), Escape(a.Func))
		if len(a.KeyNames) > 0 {
			fmt.Fprintf(&b, " by %s", Escape(strings.Join(a.KeyNames, ", ")))
		}
		b.WriteString(":\n")
		if len(rows) == 0 {
			b.WriteString("  (no hits)\n")
		}
		for i, r := range rows {
			key := ""
			if len(a.KeyNames) > 0 {
				key = "[" + Escape(keys[i]) + "]"
			}
			fmt.Fprintf(&b, "  @%s%s: %d\n", Escape(a.Name), key, r.Value(a.Func))
		}
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}

// Summary writes the totals, then one line per probe.
func (p *Text) Summary(s Summary) error {
	var b strings.Builder
	hits, events, lost := s.Totals()
	fmt.Fprintf(&b, "ngxprobe: detached; %d hits, %d events, %d lost\n", hits, events, lost)
	for _, c := range s.Probes {
		fmt.Fprintf(&b, "  %-42s %-44s hits %d, events %d, lost %d", Escape(c.Probe), Escape(c.Function), c.Hits, c.Events, c.Lost)
		if quiet := int64(c.Hits) - int64(c.Events) - int64(c.Lost); quiet > 0 && c.Events+c.Lost > 0 {
			// A filter's drops: the default set's healthy traffic.
			fmt.Fprintf(&b, " (%d printed nothing)", quiet)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}
