// Package target finds what to trace from -p PID or --binary PATH: the
// executable to read and attach to, and which processes to follow.
package target

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
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
	// Modules are the other files the process maps as code: dynamic
	// modules and libraries (with --binary, the --module files).
	Modules []Module
}

// Module is a file mapped as code into the traced process.
type Module struct {
	// Path opens the file from here: through /proc/PID/root, so that a
	// container's files are found, or /proc/PID/map_files when the file
	// was deleted since it was mapped.
	Path string
	// MappedPath is the file's path as the process maps it.
	MappedPath string
	// Deleted: the file was deleted (or replaced) since it was mapped.
	Deleted bool
}

// FromBinary traces every process running the binary; modules are
// probed in the files given.
func FromBinary(path string, modules []string) (*Target, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--binary %s: %w", path, err)
	}
	t := &Target{Path: path, Display: path}
	for _, m := range modules {
		if _, err := os.Stat(m); err != nil {
			return nil, fmt.Errorf("--module %s: %w", m, err)
		}
		t.Modules = append(t.Modules, Module{Path: m, MappedPath: m})
	}
	return t, nil
}

// FromPID traces an nginx master and its workers, or one worker. A
// process is nginx by its process title (nginx: master process ...) or by
// its executable's symbols, never by the file's name: openresty,
// nginx-debug, Angie and Tengine are nginx too.
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
	exePath := filepath.Join(dir, "exe")
	exe, err := os.Readlink(exePath)
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("pid %d (%q): reading %s: %w; another user's process needs CAP_SYS_PTRACE (or root)", pid, title, exePath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pid %d (%q): reading %s: %w", pid, title, exePath, err)
	}
	if !strings.HasPrefix(title, "nginx:") {
		if kind, err := kindOf(exePath); err != nil || kind != symbols.Nginx {
			why := "its executable defines no ngx_cycle"
			if err != nil {
				why = err.Error()
			}
			return nil, fmt.Errorf("pid %d is %q (%s; %s): %w; pass the nginx master's pid (see the pid file, or pgrep -f 'nginx: master')", pid, title, exe, why, ErrNotNginx)
		}
	}
	t := &Target{Path: exePath, Display: exe, PID: pid}
	children := Children(procRoot, pid)
	t.Master = strings.Contains(title, "master process") || len(children) > 0
	if t.Master {
		t.Workers = children
	}
	if t.Modules, err = ModulesOf(procRoot, pid); err != nil {
		return nil, err
	}
	return t, nil
}

func kindOf(path string) (symbols.Kind, error) {
	f, err := elf.Open(path)
	if err != nil {
		return symbols.Other, err
	}
	defer f.Close()
	return symbols.KindOf(f), nil
}

// ModulesOf lists the files that process pid maps as code, other than
// its executable, each once.
func ModulesOf(procRoot string, pid int) ([]Module, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	maps, err := stacks.ReadMapsLimit(procRoot, pid, MaxMappings)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	exe, _ := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "exe"))
	seen := map[string]bool{exe: true}
	var out []Module
	for _, mp := range maps {
		if !mp.Exec || !strings.HasPrefix(mp.Path, "/") || seen[mp.Path] {
			continue
		}
		seen[mp.Path] = true
		if len(out) == maxModules() {
			return nil, modulesError(pid, maxModules())
		}
		mapped, deleted := strings.CutSuffix(mp.Path, " (deleted)")
		m := Module{MappedPath: mapped, Deleted: deleted, Path: fmt.Sprintf("%s/%d/root%s", procRoot, pid, mapped)}
		if deleted {
			// The file at the path, if any, is another one now; the
			// mapped one is still there, through map_files (root only).
			m.Path = fmt.Sprintf("%s/%d/map_files/%x-%x", procRoot, pid, mp.Start, mp.End)
		}
		out = append(out, m)
	}
	return out, nil
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
