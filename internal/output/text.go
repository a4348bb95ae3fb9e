package output

import (
	"fmt"
	"io"
	"strings"
)

// Text prints events as blocks: a header line, then one line per group
// of values, printf lines and the stack, as the incident notes do. Every
// string it writes is escaped (see Escape): values, messages, names from
// the binary and paths alike.
type Text struct {
	W io.Writer
}

const timeLayout = "15:04:05.000000"

// Event writes a header line, then one line per group of values. A group
// whose values are all unreadable (no upstream yet, say) is shown as "-"
// rather than as a row of question marks.
func (p *Text) Event(ev Event) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s pid %d", ev.Time.Format(timeLayout), Escape(ev.Probe), ev.PID)
	if ev.TID != ev.PID {
		fmt.Fprintf(&b, " tid %d", ev.TID)
	}
	if ev.Clone {
		fmt.Fprintf(&b, " (%s)", Escape(ev.Function))
	}
	b.WriteByte('\n')
	writeOrigin(&b, ev.Origin)
	var groups []string
	lines := map[string][]string{}
	readable := map[string]bool{}
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		g := v.Group
		if _, ok := lines[g]; !ok {
			groups = append(groups, g)
		}
		lines[g] = append(lines[g], Escape(v.Name)+"="+Escape(displayText(v)))
		readable[g] = readable[g] || v.Readable
	}
	// Sub-groups ("client read") print under their parent's line when
	// the parent is unreadable as a whole.
	for _, g := range groups {
		if !readable[g] {
			if parent, _, ok := strings.Cut(g, " "); ok && !readable[parent] {
				continue
			}
			fmt.Fprintf(&b, "  %-16s -\n", label(g))
			continue
		}
		fmt.Fprintf(&b, "  %-16s %s\n", label(g), strings.Join(lines[g], " "))
	}
	for _, m := range ev.Messages {
		for _, line := range strings.Split(strings.TrimSuffix(m, "\n"), "\n") {
			fmt.Fprintf(&b, "  %s\n", escapeMessage(line))
		}
	}
	writeStack(&b, ev.Stack)
	_, err := io.WriteString(p.W, b.String())
	return err
}

// writeOrigin says which nginx a hit came from: its master, container
// and pod.
func writeOrigin(b *strings.Builder, o *Origin) {
	if o == nil {
		return
	}
	fmt.Fprintf(b, "  %-16s master %d %s", "nginx:", o.MasterPID, Escape(o.Binary))
	if o.ContainerID != "" {
		fmt.Fprintf(b, " container %s", Escape(o.ContainerID[:min(12, len(o.ContainerID))]))
	}
	if o.PodName != "" {
		fmt.Fprintf(b, " pod %s/%s", Escape(o.PodNamespace), Escape(o.PodName))
		if o.ContainerName != "" {
			fmt.Fprintf(b, " (%s)", Escape(o.ContainerName))
		}
	}
	b.WriteByte('\n')
}

func displayText(v Value) string {
	switch {
	case !v.Readable:
		return "?"
	case v.Display == Connection:
		return "*" + v.Text
	}
	return v.Text
}

func label(g string) string {
	if g == "" {
		return "values:"
	}
	return Escape(g) + ":"
}

// Flip writes the flip, where it happened, and its stack.
func (p *Text) Flip(f Flip) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s pid %d flip %s %d -> %d  conn *%d %s", f.Time.Format(timeLayout), f.PID, Escape(f.Field), f.Old, f.New, f.Conn, Escape(f.Role))
	switch {
	case f.Role == "upstream" && f.LoggedAs != f.Conn:
		fmt.Fprintf(&b, " (of *%d", f.LoggedAs)
		if f.Client != "" {
			fmt.Fprintf(&b, ", client %s", Escape(f.Client))
		}
		b.WriteString(")")
	case f.Client != "":
		fmt.Fprintf(&b, " (client %s)", Escape(f.Client))
	}
	fmt.Fprintf(&b, " [%s]\n", Escape(f.Mode))
	writeOrigin(&b, f.Origin)
	switch {
	case f.Mode == "exact":
		fmt.Fprintf(&b, "  at %s:%d in %s (%s)\n", Escape(f.File), f.Line, Escape(f.Function), Escape(f.Site))
	case f.Function != "":
		fmt.Fprintf(&b, "  inside %s (seen at %s, then at %s)\n", Escape(f.Function), Escape(f.From), Escape(f.To))
	default:
		fmt.Fprintf(&b, "  between %s and %s\n", Escape(f.From), Escape(f.To))
	}
	writeStack(&b, f.Stack)
	_, err := io.WriteString(p.W, b.String())
	return err
}

// writeStack prints frames as the incident notes do: module address,
// symbol+offset, then file:line, or the module for code without DWARF.
func writeStack(b *strings.Builder, st *Stack) {
	if st == nil {
		return
	}
	b.WriteString("  stack:\n")
	for _, f := range st.Frames {
		if f.Lua != nil {
			fmt.Fprintf(b, "    %8s  [lua] %s\n", "", Escape(f.Lua.Text))
			continue
		}
		name := Escape(f.Symbol)
		switch {
		case name == "":
			name = "??"
		case f.Inlined:
			name += " (inlined)"
		default:
			name = fmt.Sprintf("%s+%#x", name, f.Offset)
		}
		where := Escape(f.Module)
		if f.File != "" {
			where = fmt.Sprintf("%s:%d", Escape(f.File), f.Line)
		}
		fmt.Fprintf(b, "    %8x: %s (%s)\n", f.Address, name, where)
	}
	if st.Truncated {
		fmt.Fprintf(b, "    ... truncated: %s\n", Escape(st.Reason))
	}
	for _, n := range st.Notes {
		fmt.Fprintf(b, "    note: %s\n", Escape(n))
	}
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
		fmt.Fprintf(&b, "  %-42s %-44s hits %d, events %d, lost %d\n", Escape(c.Probe), Escape(c.Function), c.Hits, c.Events, c.Lost)
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}
