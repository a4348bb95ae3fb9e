package e2e

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// TestDetachLeavesNothing: while ngxprobe runs, bpftool sees its ngxp_*
// programs attached as uprobes to the nginx it was given; after it exits
// (--duration), none of its programs, links or perf events remain.
func TestDetachLeavesNothing(t *testing.T) {
	nginxtest.RequireRoot(t)
	bpftool := requireBpftool(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	// A 410 is an event of the default set (a healthy 200 is only counted).
	s, base := startPlain(t, inst, 1, `        location = /detach { return 410; }`)
	target := "/proc/" + strconv.Itoa(s.MasterPID()) + "/exe"

	p := startProbe(t, "run", "-p", strconv.Itoa(s.MasterPID()), "-o", "json", "--duration", "2s")
	during := readBPF(t, bpftool)
	if code, _ := httpGet(t, base+"/detach"); code != 410 {
		t.Errorf("GET /detach = %d", code)
	}
	code := p.wait(t, 2*time.Second+stopTimeout)
	checkNoPanic(t, p)
	if code != 0 {
		t.Errorf("ngxprobe --duration 2s: exit status %d, want 0: %s", code, p)
	}

	// What ngxprobe had while it ran: perf events in its fds, each a
	// uprobe or uretprobe on the target running an ngxp_ program.
	names := during.ngxpProgs()
	ours := map[int]bool{} // prog ids
	for _, pe := range during.Perf {
		if pe.PID != p.pid() {
			continue
		}
		ours[pe.ProgID] = true
		if pe.FDType != "uprobe" && pe.FDType != "uretprobe" {
			t.Errorf("ngxprobe holds a %s perf event, want uprobes only: %+v", pe.FDType, pe)
		}
		if pe.Filename != target {
			t.Errorf("ngxprobe's %s is on %q, want %q", pe.FDType, pe.Filename, target)
		}
		if !strings.HasPrefix(names[pe.ProgID], progPrefix) {
			t.Errorf("ngxprobe's %s runs program %d, which is not named %s*: %+v", pe.FDType, pe.ProgID, progPrefix, pe)
		}
	}
	// The default set: finalize and ssl_handshake entries, ngx_unix_recv's
	// return and the entry program that saves its arguments.
	if len(ours) < 4 {
		t.Errorf("during the run bpftool perf list shows %d uprobes of ngxprobe pid %d, want at least 4:\n%+v", len(ours), p.pid(), during.Perf)
	}
	var ids []int
	for id := range ours {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	ourLinks := map[int]bool{}
	for _, l := range during.Links {
		if ours[l.ProgID] {
			ourLinks[l.ID] = true
		}
	}
	if len(ourLinks) != len(ours) {
		t.Errorf("during the run: %d links to ngxprobe's %d programs %v, want one each:\n%+v", len(ourLinks), len(ours), ids, during.Links)
	}
	t.Logf("during the run: programs %v, links %d", ids, len(ourLinks))
	// The leftover check (used after every failed run in TestBadInput)
	// must see these, were ngxprobe dead: a check that can't fail is none.
	if found := during.leftovers([]int{p.pid()}, []string{target}); len(found) < len(ours) {
		t.Errorf("leftovers() found only %d of ngxprobe's %d uprobes while it ran: %q", len(found), len(ours), found)
	}

	// After the exit: all of them gone.
	after := readBPF(t, bpftool)
	for _, pr := range after.Progs {
		if ours[pr.ID] {
			t.Errorf("program %d %s still loaded after ngxprobe exited", pr.ID, pr.Name)
		}
	}
	for _, l := range after.Links {
		if ourLinks[l.ID] || ours[l.ProgID] {
			t.Errorf("link %d (%s, program %d) still there after ngxprobe exited", l.ID, l.Type, l.ProgID)
		}
	}
	for _, pe := range after.Perf {
		if pe.PID == p.pid() || ours[pe.ProgID] || pe.Filename == target {
			t.Errorf("perf event still there after ngxprobe exited: %+v", pe)
		}
	}
	checkNoLeftovers(t, []int{p.pid()}, []string{target})
	checkSummary(t, p)
}
