// Package output prints what ngxprobe traced: events, field flips,
// aggregations and the exit summary, as text blocks or JSON lines.
//
// Its model is neutral: [Event], [Flip], [Aggregate] and [Summary] hold
// values already decoded and named, and know nothing of BPF records,
// DWARF or scripts. The tracer fills them (cmd/ngxprobe's trace.go), and
// a [Printer] writes them. Text and JSON are the two printers; an
// exporter such as OTLP is a third implementation of the same interface.
//
// The JSON keys are stable and documented in the README; the structs in
// json.go define them. Events and flips, printed per hit, are encoded by
// hand into a reused buffer (no reflection, no allocation); a
// differential test holds that encoder to what encoding/json makes of
// those structs, byte for byte.
//
// What a printer writes comes largely from the traced process and its
// binary, so both printers escape every string for the terminal
// (escape.go). [Redactor] masks secrets (--redact); the tracer applies it
// while it fills the model, before any printer sees it.
package output
