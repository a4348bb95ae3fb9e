package main

import (
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch/flips"
)

// This file turns what the probes decoded into the output model: the
// names, groups and displays come from the script's EventFormat.

// eventOutput is one event, with its values named and shown as the
// script says; format is nil for a probe the script does not describe.
func eventOutput(at time.Time, ev probes.Event, format *script.EventFormat, st *output.Stack) output.Event {
	out := output.Event{
		Time:     at,
		PID:      ev.PID,
		TID:      ev.TID,
		Probe:    ev.Probe.Name,
		Function: ev.Probe.Function.Symbol,
		Clone:    ev.Probe.Function.IsClone(),
		Values:   make([]output.Value, len(ev.Values)),
		Stack:    st,
	}
	for i, v := range ev.Values {
		vf := script.ValueFormat{Name: v.Expr}
		if format != nil && i < len(format.Values) {
			vf = format.Values[i]
		}
		ov := output.Value{Name: vf.Name, Expr: v.Expr, Group: vf.Group, Hidden: vf.Hidden, Readable: v.Readable, Why: v.Why, Text: v.Text, Data: data(v.JSON)}
		switch vf.Display {
		case script.Role:
			ov.Display = output.Role
			ov.Text = role(v)
			ov.Data = ov.Text
		case script.Connection:
			ov.Display = output.Connection
		}
		out.Values[i] = ov
	}
	if format != nil {
		for i := range format.Messages {
			out.Messages = append(out.Messages, format.Messages[i].Render(ev.Values))
		}
	}
	return out
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

// flipOutput is a decoded flip of a watched field.
func flipOutput(at time.Time, ev probes.Event, f flips.Flip, st *output.Stack) output.Flip {
	return output.Flip{
		Time: at, PID: ev.PID, TID: ev.TID,
		Mode: f.Mode, Field: f.Field, Old: f.Old, New: f.New,
		Conn: f.Conn, Role: f.Role, LoggedAs: f.LoggedAs, Client: f.Client,
		Function: f.Function, File: f.File, Line: f.Line, Site: f.Site,
		From: f.From, To: f.To,
		Stack: st,
	}
}

// aggregatesOutput is the script's aggregations with the rows read from
// the kernel; a key that is the builtin probe is shown by the probe's name.
func aggregatesOutput(aggs []*script.Aggregation, rows map[*probes.Aggregation][]probes.AggregateRow) []output.Aggregate {
	var out []output.Aggregate
	for _, a := range aggs {
		oa := output.Aggregate{Name: a.Name, Func: a.Func, KeyNames: a.KeyNames}
		for _, r := range rows[a.Aggregation] {
			row := output.AggregateRow{Count: int64(r.Count), Sum: r.Sum, Min: r.Min, Max: r.Max}
			for i, k := range r.Keys {
				key := output.Key{Readable: k.Readable, Data: data(k.JSON), Text: k.Text}
				if n, ok := k.JSON.(int64); ok && k.Readable && i < len(a.ProbeKey) && a.ProbeKey[i] {
					key.Text = a.ProbeName(n)
					key.Data = key.Text
				}
				row.Keys = append(row.Keys, key)
			}
			oa.Rows = append(oa.Rows, row)
		}
		out = append(out, oa)
	}
	return out
}
