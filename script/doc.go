// Package script parses and resolves probe-set scripts, ngxprobe's
// bpftrace-like language for tracing a live nginx:
//
//	include "common.ngxp"
//	define conn = r->connection
//
//	ngx_http_finalize_request, ngx_http_terminate_request / rc == 499 || conn->read->eof / {
//		c = conn
//		print(rc, status = r->headers_out.status, c->number, c->addr_text)
//		printf("conn *%d eof=%d\n", c->number, c->read->eof)
//		stack
//		@fin[probe, r->headers_out.status] = count()
//	}
//	ngx_unix_recv%return / c->addr_text == "127.0.0.1" / { @bytes[c->number] = sum($retval) }
//	src/os/unix/ngx_recv.c:76 { print(size) }
//	ngx_unix_recv+0x4 { }
//
// A watch statement reports where and when a field of a connection flips,
// as ngxprobe watch does (package watch): "watch c->read->eof" probes the
// instructions that write it, "watch diff c->read->eof" compares it where
// nginx reads connections, and "watch both" runs the two.
//
// [ParseFile] and [ParseText] turn text into a [Script] without looking at
// any binary; [Compile] resolves a Script against an nginx image (the
// executable and the dynamic modules and libraries it maps, see
// symbols.Image), through their ELF symbols and DWARF, into a [Program]:
// what to attach where, and how to read and print each value. Neither
// needs privileges (ngxprobe check).
//
// # Grammar
//
//	script    = { include | define | watch | probe } .
//	include   = "include" STRING [";"] .
//	watch     = "watch" [ "exact" | "diff" | "both" ] EXPR [";"] .   to the end of the line
//	define    = "define" NAME "=" expr [";"] .
//	probe     = point { "," point } [ "/" expr "/" ] "{" { stmt | ";" } "}" .
//	point     = FUNCTION                 entry: a uprobe on every instance
//	                                     and at every inlined copy's entry
//	          | FUNCTION "%return"       return: a uretprobe on every
//	                                     out-of-line instance
//	          | FUNCTION "+" OFFSET      an instruction boundary in one instance
//	          | FILE ":" LINE .          the line's first address in every
//	                                     instance and every inlined copy
//	stmt      = NAME "=" expr                              a local name
//	          | "print" "(" [ STRING [","] ] [ arg { "," arg } ] ")"   arg = [NAME "="] expr
//	          | "printf" "(" STRING { "," expr } ")"
//	          | ("stack" | "ustack") [ "(" ")" ]
//	          | "@" [NAME] [ "[" expr { "," expr } "]" ] "=" agg .
//	agg       = "count()" | ("sum" | "min" | "max" | "avg") "(" expr ")" .
//	expr      = and { "||" and } .
//	and       = cmp { "&&" cmp } .
//	cmp       = unary [ ("==" | "!=" | "<" | "<=" | ">" | ">=") unary ] .
//	unary     = "!" unary | "-" NUMBER | "(" TYPE ")" unary | postfix .
//	postfix   = primary { "->" NAME | "." NAME | "[" NUMBER "]" } .
//	primary   = NAME | NUMBER | CHAR | STRING | "(" expr ")" .
//
// Comments are # and // to the end of the line, and /* ... */. Statements
// end without a separator; ";" is allowed. A FUNCTION may carry a GCC or
// LTO clone suffix (ngx_http_ssl_handshake.lto_priv.0) to name that one
// instance; without one it names every instance, and an entry probe also
// stops at each copy GCC inlined into another function (the copy's
// arguments are read there; one the copy lost reads as unavailable, with a
// note in [Instance.Notes], not an error), except before +OFFSET, where it
// names the instance whose symbol it is (offsets differ between
// instances). OFFSET and NUMBER are
// decimal, 0x hexadecimal or 0 octal, with optional u/l suffixes; CHAR is
// 'x' with the escapes of STRING: \n \t \r \0 \\ \" \' \xHH. FILE is a
// path as the build saw it (src/os/unix/ngx_recv.c) or any suffix of it
// at a directory boundary (ngx_recv.c). A cast's TYPE is struct/union/enum
// NAME, C base type words (unsigned long), a name ending in _t, or any
// name followed by one or more *: (ngx_connection_t *) rev->data.
// Comparisons do not chain (1 < x < 3 is an error), and "=" in a
// condition is an error, not an assignment.
//
// # Names
//
// Within a probe, a NAME is one of the probed function's parameters, a
// local name, a define, the builtin probe (the number of the probe that
// hit, printed by name in aggregation keys) or, in a %return probe,
// $retval. Return probes read the function's arguments too: ngxprobe
// saves them at entry. A probe at an offset or a line reads the
// parameters still in registers there.
//
// Local names and defines are substitutions, not variables: "c = conn"
// makes c mean the expression conn stands for, read anew wherever c is
// used, in the whole probe: its body and its filter. A define is visible
// in every probe of the script, whichever file defines it; the names in
// it resolve in each probe that uses it (so r->connection suits every
// probe whose function has an r). A name may not grow past 1000 nodes
// through substitution.
//
// # Filters
//
// The filter between slashes is compiled to BPF and evaluated in the
// kernel before anything is read for output: a hit that does not match
// costs the trap and the filter's reads, no event. A bare value is true
// when it is not zero (not NULL). A comparison is signed when either side
// is of a signed C type or a negative literal, unsigned otherwise. Strings (ngx_str_t, char *, char arrays) compare
// with a string literal only, with == or != (a literal of up to 63 bytes
// bounds the read); comparing two strings would need a read loop and is
// an error, as is a string against a number, two literals, or a string
// as a condition. A comparison whose value cannot be read (a NULL or
// unmapped pointer on the way) is false, so a filter never faults, and
// !(x == 1) is true when x cannot be read.
//
// # Output
//
// print writes one line per hit with each value formatted by its C type
// (strings quoted, connection numbers as *N), named by NAME= or by the
// expression's text. A string before the values labels their line, so
// one probe can print several: print("client read", eof = c->read->eof)
// (the default set, internal/probeset/default.ngxp, is written so); printf formats with %d %i %u %x %X %c %s %p and %%
// (flags, width and l are accepted), and the number of verbs must match
// the arguments. stack adds the user stack. A probe with an empty body
// prints the hit; a probe whose body has no print, printf or stack (only
// aggregations, say) prints nothing per hit.
//
// # Lua (OpenResty)
//
// On nginx with lua-nginx-module, stack also shows the Lua frames
// (package lua), and two names print where the Lua code is: $lua_where,
// "FILE:LINE" of the innermost Lua frame of the gateway's own code
// (lua-resty-core's frames are passed over), and $lua_chunk, its chunk as
// debug.traceback() names it. A filter may compare $lua_chunk with a
// string literal, == or !=: the hit is kept when a Lua function of its
// stack runs that chunk (or, for !=, none does); the literal is the chunk
// or the end of a path after a "/" ("auth.lua" matches
// /etc/nginx/lua/auth.lua). The comparison runs in the kernel after the
// Lua walk, so it is joined to the rest of the filter with && (not under
// || or !):
//
//	ngx_http_lua_ffi_exit / status == 444 && $lua_chunk == "auth.lua" / { print($lua_where) }
//
// When the probed function has a lua_State *L argument, the walk starts
// from it: a coroutine about to be resumed shows the code that waited.
// Without lua-nginx-module in the image, these names are errors.
//
// # Aggregations
//
// @name[keys] = count() counts hits per key in a kernel map, sum, min,
// max and avg of a numeric value; nothing crosses to user space per hit.
// Keys are values like print's, strings included (a key that cannot be
// read is shown as ?); a sum, min, max or avg value that cannot be read
// skips the update. Every use of one
// @name must have the same function and number of keys. Aggregations are
// printed when ngxprobe exits, rows sorted by value, largest last.
//
// # Includes
//
// An include's path is relative to the file that includes it (for
// ParseText, to the directory of the name it is given: the working
// directory for ngxprobe -e). Each file is read once: a file
// included again, or a cycle (a includes b includes a), adds nothing, so
// common definitions can be included wherever they are needed. Includes
// nest at most 16 deep.
//
// # Errors
//
// Every error is an [*Error] with a [Position] (file, line, column and the
// line's text) and renders as
//
//	t.ngxp:2:8: '=' is not a comparison: use '=='
//	    f / rc = 499 / {}
//	           ^
//
// with a hint line when there is a fix to suggest. Parse and Compile
// return an [ErrorList]: a parse stops at the first error in each file;
// Compile reports every error it finds, sorted by position, with the
// closest names for misspelt functions, parameters, fields and types.
// errors.Is matches [ErrSyntax], [ErrResolve] or [ErrInclude], and the
// symbols package's sentinels underneath (symbols.ErrFunctionNotFound,
// symbols.ErrInlined, symbols.ErrNoCode, ...).
package script
