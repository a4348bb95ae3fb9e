package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/testenv"
)

// progPrefix is the name every BPF program ngxprobe loads starts with
// (probes/session.go: "ngxp_%d"). Its maps are named ngxp_* too.
const progPrefix = "ngxp_"

// The machine may be shared with other ngxprobe runs (other sessions, other
// tests): the checks below only blame objects that are ours (held by one of
// our ngxprobe pids, or attached to one of our nginx binaries/processes) or
// that no live process holds at all.

type bpfProg struct {
	ID   int    `json:"id"`
	Type string `json:"type"`
	Name string `json:"name"`
}

type bpfLink struct {
	ID     int      `json:"id"`
	Type   linkType `json:"type"`
	ProgID int      `json:"prog_id"`
}

// linkType is a link's type as bpftool prints it: a name, or a number
// for types newer than bpftool (uprobe_multi is 12).
type linkType string

func (t *linkType) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = linkType(s)
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*t = linkType(fmt.Sprintf("type %d", n))
	return nil
}

type bpfPerf struct {
	PID      int    `json:"pid"`
	FD       int    `json:"fd"`
	ProgID   int    `json:"prog_id"`
	FDType   string `json:"fd_type"`
	Filename string `json:"filename"`
	Offset   uint64 `json:"offset"`
}

// bpfState is one look at the kernel's BPF objects through bpftool.
type bpfState struct {
	Progs []bpfProg
	Links []bpfLink
	Perf  []bpfPerf
}

// requireBpftool skips (fails with CI=true) when bpftool is missing; it is
// installed by internal/nginxtest/setup-deps.sh.
func requireBpftool(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("bpftool")
	if err != nil {
		testenv.SkipOrFail(t, "bpftool not found (apt-get install bpftool, or run internal/nginxtest/setup-deps.sh)")
	}
	return path
}

func bpftoolJSON(t testing.TB, bpftool string, out any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bpftool, append([]string{"-j"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("bpftool -j %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return // nothing at all: an empty list
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("bpftool -j %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

func readBPF(t testing.TB, bpftool string) bpfState {
	t.Helper()
	var s bpfState
	bpftoolJSON(t, bpftool, &s.Progs, "prog", "list")
	bpftoolJSON(t, bpftool, &s.Links, "link", "list")
	bpftoolJSON(t, bpftool, &s.Perf, "perf", "list")
	return s
}

func (s bpfState) ngxpProgs() map[int]string {
	m := map[int]string{}
	for _, p := range s.Progs {
		if strings.HasPrefix(p.Name, progPrefix) {
			m[p.ID] = p.Name
		}
	}
	return m
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// perfHeldByLive is the set of prog ids some live process has attached
// through a perf event (what `bpftool perf list` sees in its fds).
func (s bpfState) perfHeldByLive() map[int]bool {
	m := map[int]bool{}
	for _, p := range s.Perf {
		if alive(p.PID) {
			m[p.ProgID] = true
		}
	}
	// Links without a perf event (uprobe_multi) are held through link fds,
	// whose fdinfo names the program.
	fdinfos, _ := filepath.Glob("/proc/[0-9]*/fdinfo/*")
	for _, f := range fdinfos {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("link_id:")) {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				if id, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					m[id] = true
				}
			}
		}
	}
	return m
}

// leftovers lists what one look finds left behind: uprobes held by one of
// the dead ngxprobe pids, uprobes whose holder is gone, uprobes on one of
// our targets (a path or /proc/PID/exe of our nginx), and ngxp_ programs
// or links to them that no live process has attached (orphans).
func (s bpfState) leftovers(deadPIDs []int, targets []string) []string {
	var out []string
	ngxp := s.ngxpProgs()
	for _, p := range s.Perf {
		if !strings.Contains(p.FDType, "uprobe") && !strings.HasPrefix(ngxp[p.ProgID], progPrefix) {
			continue
		}
		desc := fmt.Sprintf("perf %s pid %d fd %d prog %d (%s) on %s+%#x", p.FDType, p.PID, p.FD, p.ProgID, ngxp[p.ProgID], p.Filename, p.Offset)
		switch {
		case pidIn(p.PID, deadPIDs):
			out = append(out, "held by our exited ngxprobe: "+desc)
		case !alive(p.PID):
			out = append(out, "held by a dead process: "+desc)
		default:
			for _, target := range targets {
				if p.Filename == target {
					out = append(out, "attached to our target: "+desc)
				}
			}
		}
	}
	held := s.perfHeldByLive()
	for id, name := range ngxp {
		if !held[id] {
			out = append(out, fmt.Sprintf("orphan program %d %s (no live process has it attached)", id, name))
		}
	}
	for _, l := range s.Links {
		if _, ok := ngxp[l.ProgID]; ok && !held[l.ProgID] {
			out = append(out, fmt.Sprintf("orphan %s link %d to program %d %s", l.Type, l.ID, l.ProgID, ngxp[l.ProgID]))
		}
	}
	sort.Strings(out)
	return out
}

// checkNoLeftovers fails when a finished ngxprobe run left a uprobe or a
// program behind. Another ngxprobe that is attaching at that moment can
// show a loaded-but-not-yet-attached program, so only what every one of a
// few looks over ~1.5 s finds counts.
func checkNoLeftovers(t testing.TB, deadPIDs []int, targets []string) {
	t.Helper()
	bpftool := requireBpftool(t)
	for _, pid := range deadPIDs {
		if alive(pid) {
			t.Fatalf("checkNoLeftovers: ngxprobe pid %d is still alive", pid)
		}
	}
	var persistent map[string]bool
	for i := 0; i < 6; i++ {
		found := readBPF(t, bpftool).leftovers(deadPIDs, targets)
		now := map[string]bool{}
		for _, f := range found {
			if persistent == nil || persistent[f] {
				now[f] = true
			}
		}
		persistent = now
		if len(persistent) == 0 {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	var list []string
	for f := range persistent {
		list = append(list, f)
	}
	sort.Strings(list)
	t.Errorf("BPF objects left behind after ngxprobe (pids %v) exited:\n  %s", deadPIDs, strings.Join(list, "\n  "))
}
