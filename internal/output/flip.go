package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/watch"
)

// JSONFlip is a watch event in JSON output.
type JSONFlip struct {
	Time  string        `json:"time"`
	PID   uint32        `json:"pid"`
	TID   uint32        `json:"tid"`
	Flip  watch.Flip    `json:"flip"`
	Stack *stacks.Stack `json:"stack,omitempty"`
}

// PrintFlip writes one flip of a watched field.
func (p *Printer) PrintFlip(ev probes.Event, f watch.Flip, stack *stacks.Stack) error {
	if p.JSON {
		b, err := json.Marshal(JSONFlip{Time: p.Clock.Wall(ev.TimeNS).Format(time.RFC3339Nano), PID: ev.PID, TID: ev.TID, Flip: f, Stack: stack})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.W, "%s\n", b)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s pid %d flip %s %d -> %d  conn *%d %s", p.Clock.Wall(ev.TimeNS).Format("15:04:05.000000"), ev.PID, f.Field, f.Old, f.New, f.Conn, f.Role)
	switch {
	case f.Role == "upstream" && f.LoggedAs != f.Conn:
		fmt.Fprintf(&b, " (of *%d", f.LoggedAs)
		if f.Client != "" {
			fmt.Fprintf(&b, ", client %s", f.Client)
		}
		b.WriteString(")")
	case f.Client != "":
		fmt.Fprintf(&b, " (client %s)", f.Client)
	}
	fmt.Fprintf(&b, " [%s]\n", f.Mode)
	if f.Mode == "exact" {
		fmt.Fprintf(&b, "  at %s:%d in %s (%s)\n", f.File, f.Line, f.Function, f.Site)
	} else if f.Function != "" {
		fmt.Fprintf(&b, "  inside %s (seen at %s, then at %s)\n", f.Function, f.From, f.To)
	} else {
		fmt.Fprintf(&b, "  between %s and %s\n", f.From, f.To)
	}
	if stack != nil {
		writeStack(&b, stack)
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}
