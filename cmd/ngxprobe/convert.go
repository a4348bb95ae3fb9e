package main

import (
	"errors"
	"regexp"
	"strconv"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch/flips"
)

// This file turns what the probes decoded into the output model: the
// names, groups and displays come from the script's EventFormat.
//
// Redaction (--redact) happens here, and not in a printer: this is the
// one place where every printer's input is made (text, JSON, and the
// OTLP exporter to come), and the only one where a printf line can still
// be formatted from masked values; a printer sees the line formatted,
// with a --redact-field value already in it. The rules themselves are
// output.Redactor's.

// converter makes the output model, masking secrets first when redact
// is set.
type converter struct {
	redact *output.Redactor
	// reuse, when set, holds the Values slice that every event reuses:
	// for a printer that is done with an event when Event returns (text
	// and JSON, behind the fleet's lock too), not for one that keeps it
	// (the OTLP exporter's queue, the closes engine). Each handler has
	// its own (see reusing).
	reuse *[]output.Value
}

// reusing returns the converter with a Values slice of its own to reuse
// from event to event: at the default set's rates, a fresh slice per
// event was most of the tracer's garbage.
func (cv converter) reusing() converter {
	cv.reuse = new([]output.Value)
	return cv
}

// values is the slice for an event of n values.
func (cv converter) values(n int) []output.Value {
	if cv.reuse == nil {
		return make([]output.Value, n)
	}
	if cap(*cv.reuse) < n {
		*cv.reuse = make([]output.Value, n)
	}
	return (*cv.reuse)[:n]
}

// event is one event, with its values named and shown as the script
// says; format is nil for a probe the script does not describe. Its
// printf lines are formatted from the masked values, their strings
// escaped: a newline read from nginx must not start an output line.
//
// It runs for every hit, so it does only what the event needs: the
// escaped copies of the values are made for printf lines alone, and
// without --redact a value is taken as decoded.
func (cv converter) event(at time.Time, ev probes.Event, format *script.EventFormat, st *output.Stack) output.Event {
	out := output.Event{
		Time:     at,
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe.Name,
		Function: ev.Probe.Function.Symbol,
		Clone:    ev.Probe.Function.IsClone(),
		Values:   cv.values(len(ev.Values)),
		Stack:    st,
	}
	var shown []probes.Value
	if format != nil && len(format.Messages) > 0 {
		shown = make([]probes.Value, len(ev.Values))
	}
	for i := range ev.Values {
		v := &ev.Values[i]
		// The fields are set one by one: the values are on the heap,
		// and a whole struct stored there costs a bulk write barrier
		// while the GC runs.
		ov := &out.Values[i]
		// Every field is set: a reused slice holds the last event's.
		ov.Name, ov.Group, ov.Hidden, ov.Display = v.Expr, "", false, output.Plain
		display := script.Plain
		if format != nil && i < len(format.Values) {
			vf := &format.Values[i]
			ov.Name, ov.Group, ov.Hidden, display = vf.Name, vf.Group, vf.Hidden, vf.Display
		}
		ov.Expr, ov.Readable, ov.Why = v.Expr, v.Readable, v.Why
		red, masked := v, false
		if cv.redact != nil {
			var r probes.Value
			r, masked = cv.value(ov.Name, *v)
			red = &r
		}
		ov.Text = red.Text
		switch {
		case masked && red.JSON == output.Mask:
			// Shown as the mask, not as a role or a *N.
			ov.Data = red.JSON
		case display == script.Role:
			ov.Display = output.Role
			ov.Text, ov.Data = roleData(v)
		case display == script.Connection:
			ov.Display = output.Connection
			ov.Data = data(red.JSON)
		default:
			ov.Data = data(red.JSON)
		}
		if shown != nil {
			shown[i] = *red
			if s, ok := red.JSON.(string); ok {
				shown[i].JSON = output.Escape(s)
			}
			shown[i].Text = output.Escape(red.Text)
		}
	}
	if shown != nil {
		out.Messages = make([]string, len(format.Messages))
		for i := range format.Messages {
			out.Messages[i] = cv.redact.Text(format.Messages[i].Render(shown))
		}
	}
	return out
}

// value is v as printed: a string with its secrets masked, or the whole
// value masked when its name or expression matches --redact-field.
// masked says whether it changed.
func (cv converter) value(name string, v probes.Value) (probes.Value, bool) {
	if cv.redact == nil || !v.Readable {
		return v, false
	}
	if s, ok := v.JSON.(string); ok {
		m := cv.redact.String(name, v.Expr, s)
		if m == s {
			return v, false
		}
		v.JSON, v.Text, v.Raw = m, maskedText(v.Text, s, m), nil
		return v, true
	}
	if !cv.redact.Field(name, v.Expr) {
		return v, false
	}
	v.JSON, v.Text, v.Raw = output.Mask, output.Mask, nil
	return v, true
}

// maskedText is the text of a string masked to m: quoted, and marked
// truncated, as the string's text was.
func maskedText(text, s, m string) string {
	switch q := strconv.Quote(s); text {
	case q:
		return strconv.Quote(m)
	case q + "...":
		return strconv.Quote(m) + "..."
	}
	return m
}

// data is a decoded value in the output model.
func data(v any) any {
	if p, ok := v.(symbols.Pointer); ok {
		return output.Pointer(p)
	}
	return v
}

// role names a connection by its c->listening: nginx creates upstream
// connections without a listening socket.
func role(listening probes.Value) string {
	if p, ok := listening.JSON.(symbols.Pointer); ok && p != 0 {
		return "client"
	}
	return "upstream"
}

// The roles as data, boxed once rather than at every hit.
var (
	clientData   any = "client"
	upstreamData any = "upstream"
)

// roleData is role's text and data.
func roleData(listening *probes.Value) (string, any) {
	if r := role(*listening); r == "client" {
		return r, clientData
	}
	return "upstream", upstreamData
}

// flip is a decoded flip of a watched field. Its client address is
// masked when --redact-field matches "client" or "c->addr_text".
func (cv converter) flip(at time.Time, ev probes.Event, f flips.Flip, st *output.Stack) output.Flip {
	if f.Client != "" && cv.redact.Field("client", "c->addr_text") {
		f.Client = output.Mask
	}
	return output.Flip{
		Time: at, PID: ev.PID, TID: ev.TID,
		Mode: f.Mode, Field: f.Field, Old: f.Old, New: f.New,
		Conn: f.Conn, Role: f.Role, LoggedAs: f.LoggedAs, Client: f.Client,
		Function: f.Function, File: f.File, Line: f.Line, Site: f.Site,
		From: f.From, To: f.To,
		Stack: st,
	}
}

// aggregates is the script's aggregations with the rows read from the
// kernel; a key that is the builtin probe is shown by the probe's name,
// and the other keys are masked as values are, named by their text.
func (cv converter) aggregates(aggs []*script.Aggregation, rows map[*probes.Aggregation][]probes.AggregateRow) []output.Aggregate {
	var out []output.Aggregate
	for _, a := range aggs {
		oa := output.Aggregate{Name: a.Name, Func: a.Func, KeyNames: a.KeyNames}
		for _, r := range rows[a.Aggregation] {
			row := output.AggregateRow{Count: int64(r.Count), Sum: r.Sum, Min: r.Min, Max: r.Max}
			for i, k := range r.Keys {
				if n, ok := k.JSON.(int64); ok && k.Readable && i < len(a.ProbeKey) && a.ProbeKey[i] {
					row.Keys = append(row.Keys, output.Key{Readable: true, Data: a.ProbeName(n), Text: a.ProbeName(n)})
					continue
				}
				name := k.Expr
				if i < len(a.KeyNames) {
					name = a.KeyNames[i]
				}
				k, _ = cv.value(name, k)
				row.Keys = append(row.Keys, output.Key{Readable: k.Readable, Data: data(k.JSON), Text: k.Text})
			}
			oa.Rows = append(oa.Rows, row)
		}
		out = append(out, oa)
	}
	return out
}

// redactFlags are --redact, --no-redact and --redact-field. When neither
// of the first two is given, redaction is byDefault: off for run and
// watch; the modes that will trace other tenants' traffic as a matter of
// course (--all-nginx, OTLP export) are to set it, and --no-redact then
// turns it off. --redact-field implies --redact.
type redactFlags struct {
	given, on bool
	byDefault bool
	fields    []*regexp.Regexp
}

// enabled says whether the flags ask for redaction.
func (r *redactFlags) enabled() bool {
	if r.given {
		return r.on
	}
	return r.byDefault || len(r.fields) > 0
}

// converter is the converter the trace flags ask for.
func (c *traceFlags) converter() converter {
	if !c.redact.enabled() {
		return converter{}
	}
	return converter{redact: output.NewRedactor(c.redact.fields)}
}

// redactSwitch is --redact (on) or --no-redact (!on), a boolean flag.
type redactSwitch struct {
	f  *redactFlags
	on bool
}

func (s redactSwitch) IsBoolFlag() bool { return true }

func (s redactSwitch) String() string {
	return strconv.FormatBool(s.f != nil && s.on && s.f.byDefault)
}

func (s redactSwitch) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	on := b == s.on
	switch {
	case s.f.given && s.f.on != on:
		return errors.New("give --redact or --no-redact, not both")
	case !on && len(s.f.fields) > 0:
		return errors.New("--redact-field masks values, and --no-redact asks for none")
	}
	s.f.given, s.f.on = true, on
	return nil
}

// redactField is --redact-field REGEXP, repeatable.
type redactField struct{ f *redactFlags }

func (r redactField) String() string { return "" }

func (r redactField) Set(v string) error {
	re, err := regexp.Compile(v)
	if err != nil {
		return err
	}
	if r.f.given && !r.f.on {
		return errors.New("--redact-field masks values, and --no-redact asks for none")
	}
	r.f.fields = append(r.f.fields, re)
	return nil
}
