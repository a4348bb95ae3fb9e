package script

import (
	"testing"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
)

func TestParseFormatErrors(t *testing.T) {
	for _, tc := range []struct{ format, msg string }{
		{"%", "printf format ends inside a verb"},
		{"x %-08l", "printf format ends inside a verb"},
		{"%f", "printf verb %f is not supported"},
		{"%d %q", "printf verb %q is not supported"},
	} {
		if _, msg, hint := parseFormat(tc.format); msg != tc.msg || hint == "" {
			t.Errorf("parseFormat(%q) = %q, hint %q; want %q with a hint", tc.format, msg, hint, tc.msg)
		}
	}
}

func TestMessageRender(t *testing.T) {
	num := func(v int64) probes.Value { return probes.Value{Readable: true, Text: "n", JSON: v} }
	unum := func(v uint64) probes.Value { return probes.Value{Readable: true, Text: "u", JSON: v} }
	str := probes.Value{Readable: true, Text: `"GET /"`, JSON: "GET /"}
	ptr := probes.Value{Readable: true, Text: "0x55d0", JSON: symbols.Pointer(0x55d0)}
	bad := probes.Value{Why: "faulted"}
	for _, tc := range []struct {
		format string
		values []probes.Value
		want   string
	}{
		{"conn *%d eof=%u\n", []probes.Value{num(3), unum(1)}, "conn *3 eof=1\n"},
		{"%5d|%-4d|%03d", []probes.Value{num(42), num(7), num(5)}, "   42|7   |005"},
		{"%ld %lu", []probes.Value{num(-1), unum(2)}, "-1 2"},
		{"%x %X %x", []probes.Value{num(-1), unum(255), ptr}, "ffffffffffffffff FF 0x55d0"},
		{"%c%c", []probes.Value{num('o'), unum('k')}, "ok"},
		{"%s|%10s|%s", []probes.Value{str, str, num(1)}, "GET /|     GET /|n"},
		{"%p %d", []probes.Value{ptr, ptr}, "0x55d0 0x55d0"},
		{"%d%%", []probes.Value{bad}, "?%"},
		{"%d and %d", []probes.Value{num(1)}, "1 and %!d(missing)"},
		{"no verbs", nil, "no verbs"},
	} {
		verbs, msg, _ := parseFormat(tc.format)
		if msg != "" {
			t.Fatalf("parseFormat(%q): %s", tc.format, msg)
		}
		m := Message{Format: tc.format, verbs: verbs}
		for i := range tc.values {
			m.Args = append(m.Args, i)
		}
		if len(tc.values) == 1 && tc.format == "%d and %d" {
			m.Args = []int{0, 1} // the second refers past the values
		}
		if got := m.Render(tc.values); got != tc.want {
			t.Errorf("Render(%q) = %q, want %q", tc.format, got, tc.want)
		}
	}
}
