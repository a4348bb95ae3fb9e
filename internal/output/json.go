package output

import (
	"encoding/json"
	"io"
	"strconv"
	"time"
	"unsafe"
)

// JSON prints one JSON object per line. The structs below say which
// keys a line has, in which order; the README documents them as stable.
// Event and Flip, written for every hit, are encoded by hand
// (appendEvent, appendFlip) into a buffer the printer keeps, without
// reflection: their tests (encode_test.go) check, on generated events,
// that the bytes are those encoding/json writes for jsonEvent and
// jsonFlip, which are kept for that. Strings are escaped
// for a terminal: encoding/json escapes the C0 controls (ESC as
// \u001b), U+2028 and U+2029, and jsonSafe DEL, the C1 controls and the
// other runes that are not printable (appendJSONString does both).
type JSON struct {
	W io.Writer
	// buf is the line being written, kept between calls.
	buf []byte
	// names holds the encodings of the strings every event of a probe
	// repeats: value names and expressions, probe and function names.
	names *nameCache
}

// nameCache remembers the JSON encoding of strings seen before, by where
// their bytes are: a probe's value names and expressions are the same
// strings at every hit, and "r->connection" costs an escape per '>'. An
// entry is used only for a string equal to the one it was made from
// (s == e.s is true at once for the same bytes, and compares them
// otherwise), so a wrong slot costs time, never output. Each address
// has a set of two entries: three names in one set would take turns.
type nameCache [nameSets][2]nameEntry

const nameSets = 512

type nameEntry struct {
	s   string
	enc []byte
}

// appendJSON appends s encoded as appendJSONString does.
func (c *nameCache) appendJSON(b []byte, s string) []byte {
	if len(s) == 0 || len(s) > 256 {
		return appendJSONString(b, s)
	}
	p := uint64(uintptr(unsafe.Pointer(unsafe.StringData(s)))) ^ uint64(len(s))<<48
	set := &c[(p*0x9e3779b97f4a7c15)>>55] // the top 9 bits: 512 sets
	switch s {
	case set[0].s:
		return append(b, set[0].enc...)
	case set[1].s:
		return append(b, set[1].enc...)
	}
	start := len(b)
	b = appendJSONString(b, s)
	set[0], set[1] = set[1], set[0] // the older entry goes, its buffer reused
	set[0].s, set[0].enc = s, append(set[0].enc[:0], b[start:]...)
	return b
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
	if p.names == nil {
		p.names = new(nameCache)
	}
	b, err := appendEvent(p.buf[:0], &ev, p.names)
	if err != nil {
		return err
	}
	return p.write(append(b, '\n'))
}

// Flip writes the flip under "flip", with its stack beside it.
func (p *JSON) Flip(f Flip) error {
	return p.write(append(appendFlip(p.buf[:0], &f), '\n'))
}

// maxKeptBuf bounds the buffer a printer keeps: an event with a long
// stack does not hold its memory for the rest of the trace.
const maxKeptBuf = 64 << 10

// write writes a line (or block) made in the printer's buffer, and keeps
// the buffer.
func (p *JSON) write(b []byte) error {
	_, err := p.W.Write(b)
	if cap(b) <= maxKeptBuf {
		p.buf = b[:0]
	} else {
		p.buf = nil
	}
	return err
}

// appendEvent appends what encoding/json writes for the event's
// jsonEvent, with jsonSafe's escapes, without the newline.
func appendEvent(b []byte, ev *Event, names *nameCache) ([]byte, error) {
	b = append(b, '{')
	if ev.Origin != nil {
		b = append(b, `"nginx":`...)
		b = appendOrigin(b, ev.Origin)
		b = append(b, ',')
	}
	b = appendHeader(b, ev.Time, ev.PID, ev.TID)
	b = append(b, `,"probe":`...)
	b = names.appendJSON(b, ev.Probe)
	b = append(b, `,"function":`...)
	b = names.appendJSON(b, ev.Function)
	b = append(b, `,"values":[`...)
	first := true
	for i := range ev.Values {
		v := &ev.Values[i]
		if v.Hidden {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"name":`...)
		b = names.appendJSON(b, v.Name)
		b = append(b, `,"expr":`...)
		b = names.appendJSON(b, v.Expr)
		b = append(b, `,"value":`...)
		if v.Readable {
			var err error
			if b, err = appendData(b, v.Data); err != nil {
				return nil, err
			}
			b = append(b, `,"readable":true`...)
		} else {
			b = append(b, `null,"readable":false`...)
		}
		if v.Why != "" {
			b = append(b, `,"why":`...)
			b = appendJSONString(b, v.Why)
		}
		if v.Readable && v.Display == Role && v.Text != "" {
			b = append(b, `,"role":`...)
			b = appendJSONString(b, v.Text)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if len(ev.Messages) > 0 {
		b = append(b, `,"messages":`...)
		b = appendStrings(b, ev.Messages)
	}
	if ev.Stack != nil {
		b = append(b, `,"stack":`...)
		b = appendStack(b, ev.Stack)
	}
	return append(b, '}'), nil
}

// appendFlip appends what encoding/json writes for the flip's jsonFlip,
// with jsonSafe's escapes, without the newline.
func appendFlip(b []byte, f *Flip) []byte {
	b = append(b, '{')
	if f.Origin != nil {
		b = append(b, `"nginx":`...)
		b = appendOrigin(b, f.Origin)
		b = append(b, ',')
	}
	b = appendHeader(b, f.Time, f.PID, f.TID)
	b = append(b, `,"flip":{"mode":`...)
	b = appendJSONString(b, f.Mode)
	b = append(b, `,"field":`...)
	b = appendJSONString(b, f.Field)
	b = append(b, `,"old":`...)
	b = strconv.AppendUint(b, f.Old, 10)
	b = append(b, `,"new":`...)
	b = strconv.AppendUint(b, f.New, 10)
	b = append(b, `,"conn":`...)
	b = strconv.AppendInt(b, f.Conn, 10)
	b = append(b, `,"role":`...)
	b = appendJSONString(b, f.Role)
	b = append(b, `,"logged_as":`...)
	b = strconv.AppendInt(b, f.LoggedAs, 10)
	b = appendOptString(b, `,"client":`, f.Client)
	b = append(b, `,"function":`...)
	b = appendJSONString(b, f.Function)
	b = appendOptString(b, `,"file":`, f.File)
	b = appendOptInt(b, `,"line":`, f.Line)
	b = appendOptString(b, `,"site":`, f.Site)
	b = appendOptString(b, `,"from":`, f.From)
	b = appendOptString(b, `,"to":`, f.To)
	b = append(b, '}')
	if f.Stack != nil {
		b = append(b, `,"stack":`...)
		b = appendStack(b, f.Stack)
	}
	return append(b, '}')
}

// appendHeader appends "time", "pid" and "tid".
func appendHeader(b []byte, t time.Time, pid, tid uint32) []byte {
	b = append(b, `"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano) // digits and -+:.TZ: nothing to escape
	b = append(b, `","pid":`...)
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, `,"tid":`...)
	return strconv.AppendUint(b, uint64(tid), 10)
}

// appendData appends a value's data: int64, uint64, string and Pointer
// directly, anything else as encoding/json and jsonSafe write it.
func appendData(b []byte, v any) ([]byte, error) {
	switch d := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case int64:
		return strconv.AppendInt(b, d, 10), nil
	case uint64:
		return strconv.AppendUint(b, d, 10), nil
	case string:
		return appendJSONString(b, d), nil
	case Pointer:
		b = append(b, `"0x`...)
		b = strconv.AppendUint(b, uint64(d), 16)
		return append(b, '"'), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, jsonSafe(j)...), nil
}

// appendOrigin appends the "nginx" object, as jsonOrigin.
func appendOrigin(b []byte, o *Origin) []byte {
	b = append(b, `{"master_pid":`...)
	b = strconv.AppendInt(b, int64(o.MasterPID), 10)
	b = append(b, `,"binary":`...)
	b = appendJSONString(b, o.Binary)
	b = appendOptString(b, `,"container_id":`, o.ContainerID)
	b = appendOptString(b, `,"k8s_pod_name":`, o.PodName)
	b = appendOptString(b, `,"k8s_namespace_name":`, o.PodNamespace)
	b = appendOptString(b, `,"k8s_container_name":`, o.ContainerName)
	return append(b, '}')
}

// appendStack appends the "stack" object, as jsonStack.
func appendStack(b []byte, st *Stack) []byte {
	b = append(b, `{"frames":[`...)
	for i := range st.Frames {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFrame(b, &st.Frames[i])
	}
	if st.Truncated {
		b = append(b, `],"truncated":true`...)
	} else {
		b = append(b, `],"truncated":false`...)
	}
	b = appendOptString(b, `,"reason":`, st.Reason)
	if len(st.Notes) > 0 {
		b = append(b, `,"notes":`...)
		b = appendStrings(b, st.Notes)
	}
	return append(b, '}')
}

// appendFrame appends a frame, as jsonFrame.
func appendFrame(b []byte, f *Frame) []byte {
	b = append(b, `{"module":`...)
	b = appendJSONString(b, f.Module)
	b = append(b, `,"address":`...)
	b = strconv.AppendUint(b, f.Address, 10)
	b = append(b, `,"symbol":`...)
	b = appendJSONString(b, f.Symbol)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, f.Offset, 10)
	b = appendOptString(b, `,"file":`, f.File)
	b = appendOptInt(b, `,"line":`, f.Line)
	if f.Inlined {
		b = append(b, `,"inlined":true`...)
	}
	if l := f.Lua; l != nil {
		b = append(b, `,"lua":{"kind":`...)
		b = appendJSONString(b, l.Kind)
		b = appendOptString(b, `,"source":`, l.Source)
		b = appendOptInt(b, `,"line":`, l.Line)
		b = appendOptInt(b, `,"first_line":`, l.FirstLine)
		b = append(b, `,"text":`...)
		b = appendJSONString(b, l.Text)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendStrings appends a JSON array of strings.
func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendOptString appends key and s, unless s is empty (omitempty).
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONString(append(b, key...), s)
}

// appendOptInt appends key and n, unless n is 0 (omitempty).
func appendOptInt(b []byte, key string, n int) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), int64(n), 10)
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
