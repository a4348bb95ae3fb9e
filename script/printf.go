package script

import (
	"fmt"
	"strings"

	"github.com/ngxprobe/ngxprobe/probes"
)

// Message is a compiled printf: its format, parsed once, and the indexes
// of its arguments among the probe's values.
type Message struct {
	Format string
	Args   []int
	verbs  []verb
}

// verb is one %-directive of a format: the literal text before it, then
// the verb with its flags and width ('l' dropped), or the final text
// when char is 0.
type verb struct {
	text  string
	flags string
	char  byte
}

// printfVerbs are the verbs that take an argument.
const printfVerbs = "diuxXscp"

// parseFormat splits a printf format into verbs. It reports the first
// problem as a message and a hint.
func parseFormat(f string) (verbs []verb, msg, hint string) {
	var text strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			text.WriteByte(f[i])
			continue
		}
		j := i + 1
		for j < len(f) && strings.IndexByte("-0123456789l", f[j]) >= 0 {
			j++
		}
		if j >= len(f) {
			return nil, "printf format ends inside a verb", "end the verb, e.g. %d"
		}
		if f[j] == '%' {
			text.WriteByte('%')
			i = j
			continue
		}
		if strings.IndexByte(printfVerbs, f[j]) < 0 {
			return nil, fmt.Sprintf("printf verb %%%c is not supported", f[j]), "use %d, %u, %x, %s, %c or %p"
		}
		verbs = append(verbs, verb{text: text.String(), flags: strings.ReplaceAll(f[i+1:j], "l", ""), char: f[j]})
		text.Reset()
		i = j
	}
	return append(verbs, verb{text: text.String()}), "", ""
}

// Render formats the message with the values it refers to. An unreadable
// value prints as ?.
func (m *Message) Render(values []probes.Value) string {
	var b strings.Builder
	arg := 0
	for _, v := range m.verbs {
		b.WriteString(v.text)
		if v.char == 0 {
			continue
		}
		if arg >= len(m.Args) || m.Args[arg] >= len(values) {
			b.WriteString("%!" + string(v.char) + "(missing)")
			continue
		}
		val := values[m.Args[arg]]
		arg++
		if !val.Readable {
			b.WriteString("?")
			continue
		}
		formatVerb(&b, v, val)
	}
	return b.String()
}

func formatVerb(b *strings.Builder, v verb, val probes.Value) {
	switch v.char {
	case 'd', 'i', 'u':
		fmt.Fprintf(b, "%"+v.flags+"v", val.JSON)
	case 'x', 'X':
		switch n := val.JSON.(type) {
		case int64:
			fmt.Fprintf(b, "%"+v.flags+string(v.char), uint64(n))
		case uint64:
			fmt.Fprintf(b, "%"+v.flags+string(v.char), n)
		default:
			b.WriteString(val.Text)
		}
	case 'c':
		switch n := val.JSON.(type) {
		case int64:
			b.WriteByte(byte(n))
		case uint64:
			b.WriteByte(byte(n))
		}
	case 's':
		if s, ok := val.JSON.(string); ok {
			fmt.Fprintf(b, "%"+v.flags+"s", s)
		} else {
			fmt.Fprintf(b, "%"+v.flags+"s", val.Text)
		}
	default: // p
		b.WriteString(val.Text)
	}
}
