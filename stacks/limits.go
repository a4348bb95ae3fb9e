package stacks

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Bounds on what a traced process can make the unwinder read: its
// mappings, the files it maps, and the stack bytes a probe copied. A
// process over one gets a *symbols.LimitError naming the Unwinder field
// (or, for ParseMaps and ReadMaps, the argument) that raises it. Modules'
// debug info and line tables are bounded by Unwinder.Debug's fields
// (symbols.OpenOptions.MaxDebugInfo, MaxUnits, MaxLineRows).
const (
	// DefaultMaxFrames is the default of Unwinder.MaxFrames.
	DefaultMaxFrames = 128
	// DefaultMaxStackBytes is the default of Unwinder.MaxStackBytes: 256
	// KiB, four times the largest copy a probe makes (64 KiB; the
	// default is 8 KiB).
	DefaultMaxStackBytes = 256 << 10
	// DefaultMaxModules is the default of Unwinder.MaxModules: 256 files
	// mapped as code by one process. Debian's nginx with every dynamic
	// module maps about 40 (the executable, 9 modules, libc, libssl,
	// libcrypto, libpcre2, zlib, the loader, ...).
	DefaultMaxModules = 256
	// DefaultMaxMappings is the default of Unwinder.MaxMappings and the
	// bound of ParseMaps and ReadMaps: 65,536 lines of /proc/PID/maps,
	// the kernel's own default limit (vm.max_map_count, 65,530). An nginx
	// worker has a few hundred.
	DefaultMaxMappings = 1 << 16
	// maxMapsLine bounds one line of /proc/PID/maps: the kernel writes a
	// path of up to PATH_MAX (4096) bytes, a newline in it as 4 ("\012").
	maxMapsLine = 64 << 10
)

// limited returns v, or def when v is not positive.
func limited(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (u *Unwinder) maxFrames() int     { return limited(u.MaxFrames, DefaultMaxFrames) }
func (u *Unwinder) maxStackBytes() int { return limited(u.MaxStackBytes, DefaultMaxStackBytes) }

// ParseMapsLimit is ParseMaps reading at most maxMappings lines
// (DefaultMaxMappings when maxMappings <= 0); where names the file in
// errors. More lines, or a line longer than a maps line can be, is an
// error.
func ParseMapsLimit(r io.Reader, maxMappings int, where string) ([]Mapping, error) {
	maxMappings = limited(maxMappings, DefaultMaxMappings)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMapsLine)
	var lines int
	out, err := parseMaps(func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		lines++
		return sc.Text(), true
	}, maxMappings)
	if err == nil {
		err = sc.Err()
	}
	if errors.Is(err, bufio.ErrTooLong) {
		err = fmt.Errorf("line %d is longer than %d bytes: %w", lines+1, maxMapsLine, err)
	}
	var le *symbols.LimitError
	switch {
	case errors.As(err, &le):
		le.Where = where
	case err != nil:
		err = fmt.Errorf("%s: %w", where, err)
	}
	return out, err
}

// ReadMapsLimit is ReadMaps reading at most maxMappings mappings.
func ReadMapsLimit(procRoot string, pid, maxMappings int) ([]Mapping, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	path := fmt.Sprintf("%s/%d/maps", procRoot, pid)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMapsLimit(f, maxMappings, path)
}

func mappingsError(n int) error {
	return &symbols.LimitError{What: "mappings", Got: int64(n) + 1, AtLeast: true, Limit: int64(n), Unit: "lines", Field: "stacks.Unwinder.MaxMappings, target.MaxMappings"}
}

// readMaps reads a process's mappings within the unwinder's bounds.
func (u *Unwinder) readMaps(pid int) ([]Mapping, error) {
	maps, err := ReadMapsLimit(u.ProcRoot, pid, u.MaxMappings)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, mp := range maps {
		if mp.Exec && mp.Path != "" && mp.Path[0] == '/' && !seen[mp.Path] {
			seen[mp.Path] = true
			if max := limited(u.MaxModules, DefaultMaxModules); len(seen) > max {
				return nil, &symbols.LimitError{Where: fmt.Sprintf("pid %d", pid), What: "files mapped as code", Got: int64(max) + 1, AtLeast: true, Limit: int64(max), Unit: "files", Field: "stacks.Unwinder.MaxModules"}
			}
		}
	}
	return maps, nil
}
