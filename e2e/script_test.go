package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// Aggregate is an @map printed at exit with -o json.
type Aggregate struct {
	Name string   `json:"name"`
	Func string   `json:"func"`
	Keys []string `json:"keys"`
	Rows []struct {
		Keys  []json.RawMessage `json:"keys"`
		Value int64             `json:"value"`
		Count int64             `json:"count"`
	} `json:"rows"`
}

// aggregates parses the aggregation lines ngxprobe printed at exit.
func aggregates(t testing.TB, p *proc) map[string]Aggregate {
	t.Helper()
	out := map[string]Aggregate{}
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, `{"aggregate"`) {
			continue
		}
		var a struct {
			Aggregate Aggregate `json:"aggregate"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("bad aggregate line %q: %v", line, err)
		}
		out[a.Aggregate.Name] = a.Aggregate
	}
	return out
}

// writeScript writes a script into the test's directory.
func writeScript(t testing.TB, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A filter runs in the kernel: only matching hits become events, and the
// hits it drops still count in the summary. An aggregation in the same
// script counts every status, and printf formats the connection number.
func TestScriptFilterAndAggregate(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, `
        location /missing { return 404; }
        location /other-missing { return 404; }`)
	path := writeScript(t, "filter.ngxp", `
# Only 404s of /missing; the rest is filtered out in the kernel.
ngx_http_finalize_request / rc == 404 && r->uri == "/missing" / {
    c = r->connection
    print(rc, uri = r->uri, conn = c->number)
    printf("404 on *%d for %s\n", c->number, r->uri)
}
ngx_http_finalize_request { @status[rc] = count() }
`)
	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json", path)
	for i := 0; i < 5; i++ {
		httpGet(t, base+"/")
	}
	for i := 0; i < 3; i++ {
		if code, _ := httpGet(t, base+"/missing"); code != 404 {
			t.Fatalf("GET /missing = %d, want 404", code)
		}
	}
	for i := 0; i < 2; i++ {
		httpGet(t, base+"/other-missing")
	}
	want := map[int64]bool{}
	for _, e := range s.AccessEntries() {
		if strings.HasPrefix(e.Request, "GET /missing ") {
			want[int64(e.Connection)] = true
		}
	}
	if len(want) != 3 {
		t.Fatalf("access log has %d /missing requests, want 3:\n%s", len(want), s.AccessLog())
	}
	waitEvent(t, p, eventTimeout, func(Event) bool { return len(events(t, p)) >= 3 })
	stopProbeOK(t, p)
	got := map[int64]bool{}
	for _, ev := range events(t, p) {
		st, _ := ev.IntExpr("rc")
		uri, _ := ev.StrExpr("r->uri")
		conn, _ := ev.IntExpr("c->number")
		if st != 404 || uri != "/missing" {
			t.Errorf("event past the filter with rc %d uri %q: %s", st, uri, ev)
		}
		if len(ev.Messages) != 1 || ev.Messages[0] != fmt.Sprintf("404 on *%d for /missing\n", conn) {
			t.Errorf("printf message %q, want \"404 on *%d for /missing\\n\"", ev.Messages, conn)
		}
		got[conn] = true
	}
	for c := range want {
		if !got[c] {
			t.Errorf("no event for /missing on connection *%d (access log); events for %v", c, got)
		}
	}
	sum := summary(t, p)
	var filtered ProbeSummary
	for _, ps := range sum.Probes {
		if ps.Hits > ps.Events && ps.Events > 0 {
			filtered = ps
		}
	}
	if filtered.Events != uint64(len(events(t, p))) || filtered.Hits < 10 {
		t.Errorf("the filtered probe should have hits for all 10 requests and events for the 3 matches: %+v", sum)
	}
	st := aggregates(t, p)["status"]
	counts := map[string]int64{}
	for _, r := range st.Rows {
		if len(r.Keys) == 1 {
			counts[string(r.Keys[0])] += r.Value
		}
	}
	// return 200 "ok" finalizes with rc 0 once its body is out.
	if counts["0"] < 5 || counts["404"] < 5 || st.Func != "count" {
		t.Errorf("@status counts by rc %v (func %q), want at least 5 for 0 and 5 for 404: %s", counts, st.Func, p)
	}
}

// A FILE:LINE probe fires on that line: the recv() line of ngx_unix_recv,
// found in the source tree of the build.
func TestScriptLineProbe(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			inst := nginxtest.Build(t, variant)
			line := sourceLine(t, inst, "src/os/unix/ngx_recv.c", "n = recv(c->fd, buf, size, 0);")
			// check names the line's address as FUNCTION+OFFSET; probe that too.
			chk := runProbe(t, ngx("check", "--binary", inst.Binary, "-e", fmt.Sprintf("src/os/unix/ngx_recv.c:%d { }", line))...)
			var offset string
			for _, f := range strings.Fields(chk.stdout.String()) {
				if strings.HasPrefix(f, "ngx_unix_recv+0x") {
					offset = f
				}
			}
			if chk.exitCode() != 0 || offset == "" {
				t.Fatalf("check of the line probe: no ngx_unix_recv+OFFSET attach point: %s", chk)
			}
			s, base := startPlain(t, inst, 1, "")
			p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json",
				"-e", fmt.Sprintf("src/os/unix/ngx_recv.c:%d { @recv_line = count() } ngx_unix_recv { @entry = count() } %s { @offset = count() }", line, offset))
			for i := 0; i < 4; i++ {
				checkServes(t, base)
			}
			stopProbeOK(t, p)
			aggs := aggregates(t, p)
			sum := func(name string) (n int64) {
				for _, r := range aggs[name].Rows {
					n += r.Value
				}
				return n
			}
			lineHits, entryHits, offsetHits := sum("recv_line"), sum("entry"), sum("offset")
			// Every call of ngx_unix_recv reaches its recv() line, whose
			// address the offset probe names.
			if lineHits == 0 || lineHits != entryHits || offsetHits != lineHits {
				t.Errorf("line %d hit %d times, %s %d times, the function's entry %d times; want all equal and > 0: %s", line, lineHits, offset, offsetHits, entryHits, p)
			}
		})
	}
}

// sourceLine finds the line of text in a file of the build's source tree.
func sourceLine(t testing.TB, inst nginxtest.Install, file, text string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(inst.SourceDir, file))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line %q", file, text)
	return 0
}

func readSource(inst nginxtest.Install, file string) ([]byte, error) {
	return os.ReadFile(filepath.Join(inst.SourceDir, file))
}
