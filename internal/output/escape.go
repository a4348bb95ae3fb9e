package output

import (
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Most of what ngxprobe prints comes from outside it: strings read from
// the traced process (request lines, headers, addresses, Unix socket
// paths), and names from the binary and the files it maps (symbols,
// source files, module paths, enum names). Any of them can hold a
// terminal escape: CSI (ESC [ or the C1 byte 0x9b) recolours or moves
// the cursor, OSC (ESC ]) sets the window title or writes the clipboard,
// CR and backspace overwrite what was printed, and a newline forges an
// output line. Printers therefore escape every such string as they
// write it: Text with Escape, JSON with appendJSONString (which writes
// what encoding/json plus jsonSafe would).

// Escape returns s with every rune that is not printable escaped as Go
// writes it in a string literal (\x1b, \a, \r, \u009b, \u2028, and \x9b
// for a byte that is not UTF-8), so that nothing in s acts on a
// terminal. Printable runes, the space included, are kept; the result
// of strconv.Quote and of Escape is left as it is.
func Escape(s string) string { return escape(s, "") }

// escape is Escape keeping the ASCII bytes in keep (a printf line's
// tabs).
func escape(s, keep string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[s[i]>>4])
			b.WriteByte(hex[s[i]&0xf])
		case r < utf8.RuneSelf && strings.IndexByte(keep, byte(r)) >= 0, r == ' ', strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r) // '\x1b', '\u2028'
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// appendEscape appends s escaped as escape(s, keep) returns it.
func appendEscape(dst []byte, s, keep string) []byte {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	dst = append(dst, s[:i]...)
	if i == len(s) {
		return dst
	}
	for i < len(s) {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			dst = append(dst, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		case r < utf8.RuneSelf && strings.IndexByte(keep, byte(r)) >= 0, strconv.IsPrint(r):
			dst = append(dst, s[i:i+n]...)
		default:
			dst = appendQuotedRune(dst, r)
		}
		i += n
	}
	return dst
}

// appendQuotedRune appends r as strconv.QuoteRune writes it, without the
// quotes: \a, \x1b, \u009b, \u2028, \U000e0001.
func appendQuotedRune(dst []byte, r rune) []byte {
	var q [16]byte
	b := strconv.AppendQuoteRune(q[:0], r)
	return append(dst, b[1:len(b)-1]...)
}

// escapeMessage is a printf line escaped, its tabs kept.
func escapeMessage(s string) string { return escape(s, "\t") }

// jsonSafe escapes, in a line encoding/json wrote, the runes it leaves
// as they are although a terminal may act on them: DEL, the C1 controls
// (U+0080 to U+009F; xterm reads U+009B as CSI) and the other runes that
// are not printable (bidirectional overrides, say). encoding/json
// already escapes the C0 controls, U+2028 and U+2029, and replaces
// invalid UTF-8. Outside strings a JSON line is ASCII, so every rune
// found is in a string, where \uXXXX means the same rune.
func jsonSafe(b []byte) []byte {
	i := 0
	for i < len(b) && b[i] < 0x7f {
		i++
	}
	if i == len(b) {
		return b
	}
	out := make([]byte, 0, len(b)+12)
	out = append(out, b[:i]...)
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= utf8.RuneSelf && !strconv.IsPrint(r)) {
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				out = appendU(appendU(out, r1), r2)
			} else {
				out = appendU(out, r)
			}
		} else {
			out = utf8.AppendRune(out, r) // a byte that is not UTF-8 becomes U+FFFD, as encoding/json does
		}
		i += n
	}
	return out
}

const hex = "0123456789abcdef"

// jsonPlain says which bytes a JSON string holds as they are, ASCII:
// encoding/json escapes the C0 controls, '"', '\\', and <, > and & (as
// \u003c, \u003e, \u0026); jsonSafe escapes DEL.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`"\<>&`, rune(c))
	}
	return t
}()

// jsonEscapes are the escapes of the other ASCII bytes, as encoding/json
// writes them (DEL as jsonSafe does).
var jsonEscapes = func() (t [utf8.RuneSelf]string) {
	for c := range t {
		switch c {
		case '\\', '"':
			t[c] = `\` + string(rune(c))
		case '\b':
			t[c] = `\b`
		case '\f':
			t[c] = `\f`
		case '\n':
			t[c] = `\n`
		case '\r':
			t[c] = `\r`
		case '\t':
			t[c] = `\t`
		default:
			t[c] = string(appendU(nil, rune(c)))
		}
	}
	return t
}()

// appendJSONString appends s as a JSON string, byte for byte as
// encoding/json (with its HTML escaping) and then jsonSafe write it:
// the C0 controls escaped (\n, \t, \b, \f, \r short, the others as
// \u00XX), '"', '\\', <, > and &, DEL, U+2028 and U+2029, the C1
// controls and the other runes that are not printable as \uXXXX (a pair
// of surrogates above U+FFFF), and a byte that is not UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start, i := 0, 0
	for {
		for i < len(s) && jsonPlain[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			dst = append(dst, jsonEscapes[c]...)
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029' || !strconv.IsPrint(r):
			dst = append(dst, s[start:i]...)
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				dst = appendU(appendU(dst, r1), r2)
			} else {
				dst = appendU(dst, r)
			}
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendU(out []byte, r rune) []byte {
	return append(out, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}
