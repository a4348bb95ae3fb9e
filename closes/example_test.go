package closes_test

import (
	"fmt"
	"time"

	"github.com/ngxprobe/ngxprobe/closes"
	"github.com/ngxprobe/ngxprobe/internal/output"
)

// The Engine joins the probe set's events by the client's *N: here a
// request that ended with return 444, then its connection's close.
func ExampleEngine() {
	at := time.Date(2026, 11, 30, 11, 2, 3, 0, time.UTC)
	value := func(group, name string, data any) output.Value {
		return output.Value{Group: group, Name: name, Data: data, Readable: true}
	}
	e := &closes.Engine{}
	e.Add(output.Event{Time: at, PID: 1, Values: []output.Value{
		value("terminate", "rc", int64(444)), value("terminate", "conn", int64(17)),
		value("terminate", "method", "GET"), value("terminate", "uri", "/c444"),
	}})
	for _, v := range e.Add(output.Event{Time: at, PID: 1, Values: []output.Value{
		value("close", "conn", int64(17)), value("close", "timedout", int64(1)),
	}}) {
		fmt.Printf("*%d %s %s %d — %s/%s: %s\n", v.Conn, v.Method, v.URI, v.Status, v.Initiator, v.Cause, v.Summary)
	}
	// Output:
	// *17 GET /c444 444 — nginx/return_444: nginx closed the connection without a response (return 444)
}
