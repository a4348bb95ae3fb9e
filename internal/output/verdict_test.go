package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A healthy close's verdict (closes --all) is marked as such in text and
// JSON; an abnormal one carries no mark.
func TestVerdictHealthyMark(t *testing.T) {
	at := time.Date(2026, 11, 30, 11, 2, 3, 0, time.UTC)
	for _, healthy := range []bool{false, true} {
		v := Verdict{Time: at, Conn: 7, Side: "client", Peer: "203.0.113.7", Initiator: "nginx", Cause: "keepalive_timeout", Summary: "nginx closed the idle keepalive connection", Healthy: healthy}
		if !healthy {
			v.Cause = "timeout"
		}
		var text, js bytes.Buffer
		if err := (&Text{W: &text}).Verdict(v); err != nil {
			t.Fatal(err)
		}
		if err := (&JSON{W: &js}).Verdict(v); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(text.String(), "— healthy (keepalive_timeout): nginx closed"); got != healthy {
			t.Errorf("healthy=%v: text %q", healthy, text.String())
		}
		var m struct {
			Verdict map[string]any `json:"verdict"`
		}
		if err := json.Unmarshal(js.Bytes(), &m); err != nil {
			t.Fatalf("%v: %s", err, js.String())
		}
		if got, present := m.Verdict["healthy"]; present != healthy || (healthy && got != true) {
			t.Errorf("healthy=%v: JSON %s", healthy, js.String())
		}
	}
}
