// Package target finds what to trace from -p PID or --binary PATH: the
// executable to read and attach to, and which processes to follow.
package target

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Sentinel errors.
var (
	ErrNoProcess = errors.New("no such process")
	ErrNotNginx  = errors.New("process is not nginx")
)

// Target is the executable and the process filter.
type Target struct {
	// Path is opened for symbols and uprobes: /proc/PID/exe for a process,
	// so a binary inside a container's mount namespace works too.
	Path string
	// Display names the binary in messages.
	Display string
	PID     int
	Master  bool // PID is a master: its workers, present and future, are traced
	Workers []int
}

// FromBinary traces every process running the binary.
func FromBinary(path string) (*Target, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--binary %s: %w", path, err)
	}
	return &Target{Path: path, Display: path}, nil
}

// FromPID traces an nginx master and its workers, or one worker.
func FromPID(procRoot string, pid int) (*Target, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w (has it exited?)", pid, ErrNoProcess)
	}
	title := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	exe, _ := os.Readlink(filepath.Join(dir, "exe"))
	if !strings.HasPrefix(title, "nginx:") && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "nginx" && !strings.Contains(filepath.Base(exe), "openresty") {
		return nil, fmt.Errorf("pid %d is %q (%s): %w; pass the nginx master's pid (see the pid file, or pgrep -f 'nginx: master')", pid, title, exe, ErrNotNginx)
	}
	t := &Target{Path: filepath.Join(dir, "exe"), Display: exe, PID: pid}
	t.Master = strings.HasPrefix(title, "nginx: master") || len(Children(procRoot, pid)) > 0
	if t.Master {
		t.Workers = Children(procRoot, pid)
	}
	return t, nil
}

// Children lists the processes whose parent is pid.
func Children(procRoot string, pid int) []int {
	if procRoot == "" {
		procRoot = "/proc"
	}
	entries, _ := os.ReadDir(procRoot)
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesized comm: state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
