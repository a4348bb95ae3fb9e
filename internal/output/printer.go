package output

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Printer writes what a trace produces. Text and JSON implement it.
type Printer interface {
	Event(Event) error
	Flip(Flip) error
	// Aggregates writes each aggregation, rows sorted by value as
	// bpftrace does, largest last.
	Aggregates([]Aggregate) error
	// Summary writes the counts of a trace that ended.
	Summary(Summary) error
}

// Formats lists the formats New knows.
var Formats = []string{"text", "json"}

// New returns the printer for format ("text" or "json") writing to w.
func New(format string, w io.Writer) (Printer, error) {
	switch format {
	case "text":
		return &Text{W: w}, nil
	case "json":
		return &JSON{W: w}, nil
	}
	return nil, fmt.Errorf("output format %q: want %s", format, strings.Join(Formats, " or "))
}

// MergedRows merges the rows whose keys print alike (two unreadable
// values, say), then sorts them by value, and by key text among equals.
// It returns the rows and each row's key text: every printer and
// exporter shows an aggregation so.
func MergedRows(a Aggregate) ([]AggregateRow, []string) {
	var rows []AggregateRow
	var texts []string
	at := map[string]int{}
	for _, r := range a.Rows {
		parts := make([]string, len(r.Keys))
		for i, k := range r.Keys {
			parts[i] = k.Text
			if !k.Readable {
				parts[i] = "?"
			}
		}
		t := strings.Join(parts, ", ")
		if i, ok := at[t]; ok {
			m := &rows[i]
			m.Count += r.Count
			m.Sum += r.Sum
			m.Min, m.Max = min(m.Min, r.Min), max(m.Max, r.Max)
			continue
		}
		at[t] = len(rows)
		rows = append(rows, r)
		texts = append(texts, t)
	}
	order := make([]int, len(rows))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		vi, vj := rows[order[i]].Value(a.Func), rows[order[j]].Value(a.Func)
		if vi != vj {
			return vi < vj
		}
		return texts[order[i]] < texts[order[j]]
	})
	sortedRows := make([]AggregateRow, len(order))
	sortedTexts := make([]string, len(order))
	for i, k := range order {
		sortedRows[i], sortedTexts[i] = rows[k], texts[k]
	}
	return sortedRows, sortedTexts
}
