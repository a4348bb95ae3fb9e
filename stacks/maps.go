package stacks

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Offset     uint64 // file offset of Start
	Exec       bool
	Path       string // "" for anonymous memory
}

// ReadMaps reads /proc/PID/maps.
func ReadMaps(procRoot string, pid int) ([]Mapping, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	f, err := os.Open(fmt.Sprintf("%s/%d/maps", procRoot, pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMaps(f)
}

// ParseMaps parses the maps format:
// start-end perms offset dev inode path.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps: bad range %q", f[0])
		}
		m := Mapping{Exec: strings.Contains(f[1], "x")}
		var err error
		if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
			return nil, fmt.Errorf("maps: %w", err)
		}
		if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
			return nil, fmt.Errorf("maps: %w", err)
		}
		if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
			return nil, fmt.Errorf("maps: %w", err)
		}
		if len(f) >= 6 {
			// The path is the rest of the line, as it is: it may hold runs
			// of spaces that Fields would collapse.
			m.Path = pathField(line)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// find returns the mapping containing addr.
func find(maps []Mapping, addr uint64) (Mapping, bool) {
	for _, m := range maps {
		if addr >= m.Start && addr < m.End {
			return m, true
		}
	}
	return Mapping{}, false
}

// pathField returns what follows the fifth field (the inode) of a maps
// line.
func pathField(line string) string {
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			return ""
		}
		rest = rest[i:]
	}
	return strings.TrimLeft(rest, " \t")
}
