package script_test

import (
	"errors"
	"fmt"

	"github.com/ngxprobe/ngxprobe/script"
)

// ExampleParseText parses a script, without a binary, and lists its
// probe points with where they were written.
func ExampleParseText() {
	src := `define conn = r->connection

ngx_http_finalize_request, ngx_http_terminate_request / rc == 499 || conn->read->eof / {
	print(rc, status = r->headers_out.status, conn->number)
	@fin[probe] = count()
}
ngx_unix_recv%return / $retval > 0 / { @bytes[c->number] = sum($retval) }
src/os/unix/ngx_recv.c:76 { print(size) }
ngx_unix_recv+0x4 { stack }
`
	s, err := script.ParseText("example.ngxp", src, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	kinds := map[script.ProbeKind]string{
		script.AtEntry:  "entry",
		script.AtReturn: "return",
		script.AtOffset: "offset",
		script.AtLine:   "line",
	}
	for _, p := range s.Probes {
		for _, pt := range p.Points {
			fmt.Printf("%-22s %-6s %s\n", s.Files.Position(pt.At), kinds[pt.Kind], pt.Text)
		}
		for _, st := range p.Body {
			if pr, ok := st.(*script.Print); ok {
				for _, a := range pr.Args {
					fmt.Printf("    print %s = %s\n", a.Name, a.Text)
				}
			}
		}
	}
	fmt.Println(len(s.Defines), "define:", s.Defines[0].Name)
	// Output:
	// example.ngxp:3:1       entry  ngx_http_finalize_request
	// example.ngxp:3:28      entry  ngx_http_terminate_request
	//     print rc = rc
	//     print status = r->headers_out.status
	//     print conn->number = conn->number
	// example.ngxp:7:1       return ngx_unix_recv%return
	// example.ngxp:8:1       line   src/os/unix/ngx_recv.c:76
	//     print size = size
	// example.ngxp:9:1       offset ngx_unix_recv+0x4
	// 1 define: conn
}

// ExampleParseText_error shows a syntax error as ngxprobe prints it: the
// position, the line and a caret under the column.
func ExampleParseText_error() {
	_, err := script.ParseText("filter.ngxp", "ngx_http_finalize_request / rc = 499 / {\n\tprint(rc)\n}\n", nil)
	fmt.Println(err)
	fmt.Println("syntax error:", errors.Is(err, script.ErrSyntax))
	var list script.ErrorList
	if errors.As(err, &list) {
		fmt.Printf("at line %d, column %d\n", list[0].Pos.Line, list[0].Pos.Col)
	}
	// Output:
	// filter.ngxp:1:32: '=' is not a comparison: use '=='
	//     ngx_http_finalize_request / rc = 499 / {
	//                                    ^
	// syntax error: true
	// at line 1, column 32
}
