package output

import (
	"encoding/json"
	"io"
	"time"
)

// JSON prints one JSON object per line. The structs below are the only
// place the keys are set; the README documents them as stable. Strings
// are escaped for a terminal: encoding/json escapes the C0 controls
// (ESC as \u001b), U+2028 and U+2029, and jsonSafe DEL, the C1 controls
// and the other runes that are not printable.
type JSON struct {
	W io.Writer
}

// MarshalJSON writes a pointer as the string "0x...".
func (p Pointer) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

type jsonValue struct {
	Name     string `json:"name"`
	Expr     string `json:"expr"`
	Value    any    `json:"value"`
	Readable bool   `json:"readable"`
	Why      string `json:"why,omitempty"`
	Role     string `json:"role,omitempty"`
}

// jsonOrigin is the "nginx" object of a hit with --all-nginx.
type jsonOrigin struct {
	MasterPID     int    `json:"master_pid"`
	Binary        string `json:"binary"`
	ContainerID   string `json:"container_id,omitempty"`
	PodName       string `json:"k8s_pod_name,omitempty"`
	PodNamespace  string `json:"k8s_namespace_name,omitempty"`
	ContainerName string `json:"k8s_container_name,omitempty"`
}

func toJSONOrigin(o *Origin) *jsonOrigin {
	if o == nil {
		return nil
	}
	j := jsonOrigin(*o)
	return &j
}

type jsonEvent struct {
	Nginx    *jsonOrigin `json:"nginx,omitempty"`
	Time     string      `json:"time"`
	PID      uint32      `json:"pid"`
	TID      uint32      `json:"tid"`
	Probe    string      `json:"probe"`
	Function string      `json:"function"`
	Values   []jsonValue `json:"values"`
	Messages []string    `json:"messages,omitempty"`
	Stack    *jsonStack  `json:"stack,omitempty"`
}

type jsonFrame struct {
	Module  string        `json:"module"`
	Address uint64        `json:"address"`
	Symbol  string        `json:"symbol"`
	Offset  uint64        `json:"offset"`
	File    string        `json:"file,omitempty"`
	Line    int           `json:"line,omitempty"`
	Inlined bool          `json:"inlined,omitempty"`
	Lua     *jsonLuaFrame `json:"lua,omitempty"`
}

type jsonLuaFrame struct {
	Kind      string `json:"kind"`
	Source    string `json:"source,omitempty"`
	Line      int    `json:"line,omitempty"`
	FirstLine int    `json:"first_line,omitempty"`
	Text      string `json:"text"`
}

type jsonStack struct {
	Frames    []jsonFrame `json:"frames"`
	Truncated bool        `json:"truncated"`
	Reason    string      `json:"reason,omitempty"`
	Notes     []string    `json:"notes,omitempty"`
}

type jsonFlipBody struct {
	Mode     string `json:"mode"`
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
	Site     string `json:"site,omitempty"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
}

type jsonFlip struct {
	Nginx *jsonOrigin  `json:"nginx,omitempty"`
	Time  string       `json:"time"`
	PID   uint32       `json:"pid"`
	TID   uint32       `json:"tid"`
	Flip  jsonFlipBody `json:"flip"`
	Stack *jsonStack   `json:"stack,omitempty"`
}

type jsonAggregateRow struct {
	Keys  []any `json:"keys"`
	Value int64 `json:"value"`
	Count int64 `json:"count"`
	Sum   int64 `json:"sum"`
	Min   int64 `json:"min"`
	Max   int64 `json:"max"`
}

type jsonAggregate struct {
	Name string             `json:"name"`
	Func string             `json:"func"`
	Keys []string           `json:"keys"`
	Rows []jsonAggregateRow `json:"rows"`
}

type jsonProbeCount struct {
	Probe    string `json:"probe"`
	Function string `json:"function"`
	Hits     uint64 `json:"hits"`
	Events   uint64 `json:"events"`
	Lost     uint64 `json:"lost"`
}

type jsonSummary struct {
	Hits   uint64           `json:"hits"`
	Events uint64           `json:"events"`
	Lost   uint64           `json:"lost"`
	Probes []jsonProbeCount `json:"probes"`
}

func (p *JSON) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.W.Write(append(jsonSafe(b), '\n'))
	return err
}

func jsonTime(t time.Time) string { return t.Format(time.RFC3339Nano) }

func toJSONStack(st *Stack) *jsonStack {
	if st == nil {
		return nil
	}
	out := &jsonStack{Frames: make([]jsonFrame, len(st.Frames)), Truncated: st.Truncated, Reason: st.Reason, Notes: st.Notes}
	for i, f := range st.Frames {
		out.Frames[i] = jsonFrame{Module: f.Module, Address: f.Address, Symbol: f.Symbol, Offset: f.Offset, File: f.File, Line: f.Line, Inlined: f.Inlined}
		if f.Lua != nil {
			out.Frames[i].Lua = &jsonLuaFrame{Kind: f.Lua.Kind, Source: f.Lua.Source, Line: f.Lua.Line, FirstLine: f.Lua.FirstLine, Text: f.Lua.Text}
		}
	}
	return out
}

// Event writes every value that is not hidden, with its name, expression
// and readability; a role is written as its name, in value and role.
func (p *JSON) Event(ev Event) error {
	out := jsonEvent{
		Nginx:    toJSONOrigin(ev.Origin),
		Time:     jsonTime(ev.Time),
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe,
		Function: ev.Function,
		Values:   []jsonValue{},
		Messages: ev.Messages,
		Stack:    toJSONStack(ev.Stack),
	}
	for _, v := range ev.Values {
		if v.Hidden {
			continue
		}
		jv := jsonValue{Name: v.Name, Expr: v.Expr, Readable: v.Readable, Why: v.Why}
		if v.Readable {
			jv.Value = v.Data
			if v.Display == Role {
				jv.Role = v.Text
			}
		}
		out.Values = append(out.Values, jv)
	}
	return p.line(out)
}

// Flip writes the flip under "flip", with its stack beside it.
func (p *JSON) Flip(f Flip) error {
	return p.line(jsonFlip{
		Nginx: toJSONOrigin(f.Origin),
		Time:  jsonTime(f.Time), PID: f.PID, TID: f.TID,
		Flip: jsonFlipBody{
			Mode: f.Mode, Field: f.Field, Old: f.Old, New: f.New, Conn: f.Conn, Role: f.Role, LoggedAs: f.LoggedAs,
			Client: f.Client, Function: f.Function, File: f.File, Line: f.Line, Site: f.Site, From: f.From, To: f.To,
		},
		Stack: toJSONStack(f.Stack),
	})
}

// Aggregates writes one {"aggregate": ...} line per aggregation. Every
// row carries count, sum, min and max; value is what Func asks for. An
// unreadable key is null.
func (p *JSON) Aggregates(aggs []Aggregate) error {
	for _, a := range aggs {
		rows, _ := MergedRows(a)
		out := jsonAggregate{Name: a.Name, Func: a.Func, Keys: a.KeyNames, Rows: []jsonAggregateRow{}}
		for _, r := range rows {
			keys := make([]any, len(r.Keys))
			for i, k := range r.Keys {
				if k.Readable {
					keys[i] = k.Data
				}
			}
			out.Rows = append(out.Rows, jsonAggregateRow{Keys: keys, Value: r.Value(a.Func), Count: r.Count, Sum: r.Sum, Min: r.Min, Max: r.Max})
		}
		if err := p.line(map[string]jsonAggregate{"aggregate": out}); err != nil {
			return err
		}
	}
	return nil
}

// Summary writes {"summary": {...}} with the totals and each probe.
func (p *JSON) Summary(s Summary) error {
	var out jsonSummary
	out.Hits, out.Events, out.Lost = s.Totals()
	for _, c := range s.Probes {
		out.Probes = append(out.Probes, jsonProbeCount(c))
	}
	return p.line(map[string]jsonSummary{"summary": out})
}
