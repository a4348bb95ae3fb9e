package output

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
)

// JSONAggregate is an aggregation printed at exit.
type JSONAggregate struct {
	Name string           `json:"name"`
	Func string           `json:"func"`
	Keys []string         `json:"keys"`
	Rows []JSONAggregated `json:"rows"`
}

// JSONAggregated is one key's result. Value is what Func asks for; the
// others are there for every function.
type JSONAggregated struct {
	Keys  []any `json:"keys"`
	Value int64 `json:"value"`
	Count int64 `json:"count"`
	Sum   int64 `json:"sum"`
	Min   int64 `json:"min"`
	Max   int64 `json:"max"`
}

// PrintAggregates writes each aggregation, rows sorted by value as
// bpftrace does, largest last. Rows whose keys format alike (two
// unreadable values, say) are merged.
func PrintAggregates(w io.Writer, asJSON bool, aggs []*script.Aggregation, rows map[*probes.Aggregation][]probes.AggregateRow) error {
	for _, a := range aggs {
		out := JSONAggregate{Name: a.Name, Func: a.Func, Keys: a.KeyNames, Rows: []JSONAggregated{}}
		texts := map[string]int{}
		var keyTexts []string
		for _, r := range rows[a.Aggregation] {
			var keys []any
			var parts []string
			for i, k := range r.Keys {
				var jv any = k.JSON
				text := k.Text
				if !k.Readable {
					jv, text = nil, "?"
				} else if i < len(a.ProbeKey) && a.ProbeKey[i] {
					if n, ok := k.JSON.(int64); ok {
						text = a.ProbeName(n)
						jv = text
					}
				}
				keys = append(keys, jv)
				parts = append(parts, text)
			}
			t := strings.Join(parts, ", ")
			if i, ok := texts[t]; ok {
				m := &out.Rows[i]
				m.Count += int64(r.Count)
				m.Sum += r.Sum
				m.Min, m.Max = min(m.Min, r.Min), max(m.Max, r.Max)
				continue
			}
			texts[t] = len(out.Rows)
			keyTexts = append(keyTexts, t)
			out.Rows = append(out.Rows, JSONAggregated{Keys: keys, Count: int64(r.Count), Sum: r.Sum, Min: r.Min, Max: r.Max})
		}
		for i := range out.Rows {
			out.Rows[i].Value = aggValue(a.Func, out.Rows[i])
		}
		order := make([]int, len(out.Rows))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(i, j int) bool {
			a, b := out.Rows[order[i]], out.Rows[order[j]]
			if a.Value != b.Value {
				return a.Value < b.Value
			}
			return keyTexts[order[i]] < keyTexts[order[j]]
		})
		sorted := make([]JSONAggregated, len(order))
		for i, k := range order {
			sorted[i] = out.Rows[k]
		}
		out.Rows = sorted
		if asJSON {
			b, err := json.Marshal(map[string]JSONAggregate{"aggregate": out})
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(w, "\n@%s (%s)", a.Name, a.Func)
		if len(a.KeyNames) > 0 {
			fmt.Fprintf(w, " by %s", strings.Join(a.KeyNames, ", "))
		}
		fmt.Fprintln(w, ":")
		if len(order) == 0 {
			fmt.Fprintln(w, "  (no hits)")
		}
		for _, k := range order {
			r := out.Rows[k]
			key := ""
			if len(a.KeyNames) > 0 {
				key = "[" + keyTexts[k] + "]"
			}
			fmt.Fprintf(w, "  @%s%s: %d\n", a.Name, key, r.Value)
		}
	}
	return nil
}

func aggValue(fn string, r JSONAggregated) int64 {
	switch fn {
	case "sum":
		return r.Sum
	case "min":
		return r.Min
	case "max":
		return r.Max
	case "avg":
		if r.Count == 0 {
			return 0
		}
		return r.Sum / r.Count
	}
	return r.Count
}
