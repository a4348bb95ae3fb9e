package symbols

import (
	"fmt"
	"sort"
	"strings"
)

// NotFoundError names what was missing, where, and the closest names.
type NotFoundError struct {
	Kind    error // ErrFunctionNotFound, ErrTypeNotFound or ErrFieldNotFound
	Name    string
	Where   string // binary path, or the struct searched
	Closest []string
	All     []string // for fields: every field of the struct
}

// maxListed is how many names an error lists in full.
const maxListed = 12

func (e *NotFoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %q in %s", e.Kind, e.Name, e.Where)
	if len(e.Closest) > 0 {
		fmt.Fprintf(&b, "; did you mean %s?", strings.Join(e.Closest, ", "))
	}
	switch {
	case len(e.All) == 0:
	case len(e.All) <= maxListed:
		what := "fields"
		if e.Kind == ErrNoParam {
			what = "parameters"
		}
		fmt.Fprintf(&b, " (%s: %s)", what, strings.Join(e.All, ", "))
	case e.Kind == ErrFieldNotFound:
		// A long list helps nobody on one line: point to the layout.
		fmt.Fprintf(&b, " (ngxprobe fields '%s' lists its %d fields)", e.Where, len(e.All))
	default:
		fmt.Fprintf(&b, " (%d in all)", len(e.All))
	}
	return b.String()
}

func (e *NotFoundError) Unwrap() error { return e.Kind }

// Closest returns up to n candidates nearest to name: by edit distance,
// with candidates that contain name (or are contained in it) ranked first.
func Closest(name string, candidates []string, n int) []string {
	type scored struct {
		s string
		d int
	}
	var list []scored
	for _, c := range candidates {
		d := editDistance(name, c)
		if strings.Contains(c, name) || strings.Contains(name, c) {
			d = d/4 - 1
		}
		if d <= max(3, len(name)/3) {
			list = append(list, scored{c, d})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].d != list[j].d {
			return list[i].d < list[j].d
		}
		return list[i].s < list[j].s
	})
	var out []string
	for i := 0; i < len(list) && i < n; i++ {
		out = append(out, list[i].s)
	}
	return out
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
