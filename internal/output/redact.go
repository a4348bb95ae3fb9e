package output

import (
	"regexp"
	"strings"
)

// Mask is what a redacted value, header or query argument shows.
const Mask = "***"

// Redactor masks secrets in the strings a trace prints (--redact):
//
//   - the values of query strings in URIs and request lines
//     ("GET /a?token=abc&x=1 HTTP/1.1" becomes
//     "GET /a?token=***&x=*** HTTP/1.1"), and a query string read as
//     such (r->args);
//   - the values of Cookie, Set-Cookie and Authorization (and
//     Proxy-Authorization) header lines ("Authorization: ***"), and the
//     whole of a value read from such a header: one whose name or
//     expression says cookie, authorization or passwd
//     (r->headers_in.authorization->value, r->headers_in.passwd);
//   - the whole of a value whose name or expression matches one of the
//     user's patterns (--redact-field), whatever its type.
//
// Redaction happens where decoded events become the output model
// (cmd/ngxprobe's convert.go), before any printer sees them, and before
// printf lines are formatted from the values. A nil Redactor masks
// nothing.
type Redactor struct {
	fields []*regexp.Regexp
}

// NewRedactor returns a Redactor with the built-in rules and the
// user's field patterns.
func NewRedactor(fields []*regexp.Regexp) *Redactor {
	return &Redactor{fields: fields}
}

var (
	// secretName is a value read from a header that carries credentials.
	secretName = regexp.MustCompile(`(?i)cookie|authorization|passwd`)
	// queryExpr is a value that is a query string without its '?'.
	queryExpr = regexp.MustCompile(`(^|->|\.)args$`)
	// secretHeader is a header line whose value is masked, to the end of
	// its line.
	secretHeader = regexp.MustCompile(`(?i)\b(set-cookie|cookie|proxy-authorization|authorization)[ \t]*:[^\r\n]*`)
)

// Field reports whether a value named name, read from expr, is masked
// whole whatever its type: it matches a --redact-field pattern.
func (r *Redactor) Field(name, expr string) bool {
	if r == nil {
		return false
	}
	for _, re := range r.fields {
		if re.MatchString(name) || re.MatchString(expr) {
			return true
		}
	}
	return false
}

// String masks a string value named name, read from expr: whole when it
// matches a pattern or comes from a credential header, its arguments
// when it is a query string (r->args), and else the header lines and
// URI queries in it, as Text does.
func (r *Redactor) String(name, expr, s string) string {
	switch {
	case r == nil:
		return s
	case r.Field(name, expr) || secretName.MatchString(name) || secretName.MatchString(expr):
		return Mask
	case queryExpr.MatchString(expr):
		return maskParams(s)
	}
	return r.Text(s)
}

// Text masks, in free text (a printf line, a request line, a buffer of
// header lines), the values of the credential header lines and of the
// query strings of URIs.
func (r *Redactor) Text(s string) string {
	if r == nil {
		return s
	}
	s = secretHeader.ReplaceAllStringFunc(s, func(h string) string {
		name, _, _ := strings.Cut(h, ":")
		return name + ": " + Mask
	})
	return maskQueries(s)
}

// maskQueries masks the query string values of every URI in s: a '?'
// in a word with a '/' before it, to the end of the word or a '#'. Only
// white space ends a word: nginx takes quotes and brackets in a URI.
func maskQueries(s string) string {
	var b strings.Builder
	from, word := 0, 0 // s[:from] is written; s[word:i] is the word before s[i]
	for i := 0; i < len(s); i++ {
		switch {
		case strings.IndexByte(wordEnds, s[i]) >= 0:
			word = i + 1
			continue
		case s[i] != '?' || strings.IndexByte(s[word:i], '/') < 0:
			continue
		}
		end := i + 1
		for end < len(s) && strings.IndexByte(wordEnds+"#", s[end]) < 0 {
			end++
		}
		b.WriteString(s[from : i+1])
		b.WriteString(maskParams(s[i+1 : end]))
		from, word, i = end, end, end-1
	}
	if from == 0 {
		return s
	}
	b.WriteString(s[from:])
	return b.String()
}

// wordEnds end a URI in text.
const wordEnds = " \t\r\n\v\f"

// maskParams masks the values of a query string, keeping the keys; an
// argument without '=' is masked whole.
func maskParams(q string) string {
	if q == "" {
		return q
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok {
			parts[i] = k + "=" + Mask
		} else if p != "" {
			parts[i] = Mask
		}
	}
	return strings.Join(parts, "&")
}
