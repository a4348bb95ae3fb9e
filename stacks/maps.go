package stacks

import (
	"fmt"
	"io"
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

// ReadMaps reads /proc/PID/maps, at most DefaultMaxMappings lines
// (ReadMapsLimit takes another bound).
func ReadMaps(procRoot string, pid int) ([]Mapping, error) {
	return ReadMapsLimit(procRoot, pid, DefaultMaxMappings)
}

// ParseMaps parses the maps format:
// start-end perms offset dev inode path.
// It reads at most DefaultMaxMappings lines (see ParseMapsLimit).
func ParseMaps(r io.Reader) ([]Mapping, error) {
	return ParseMapsLimit(r, DefaultMaxMappings, "maps")
}

// parseMaps parses the lines that next returns, at most max of them.
func parseMaps(next func() (string, bool), max int) ([]Mapping, error) {
	var out []Mapping
	for n := 0; ; n++ {
		line, ok := next()
		if !ok {
			break
		}
		if n == max {
			return nil, mappingsError(max)
		}
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("bad range %q", f[0])
		}
		m := Mapping{Exec: strings.Contains(f[1], "x")}
		var err error
		if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
			return nil, err
		}
		if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
			return nil, err
		}
		if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
			return nil, err
		}
		if len(f) >= 6 {
			// The path is the rest of the line, as it is: it may hold runs
			// of spaces that Fields would collapse.
			m.Path = pathField(line)
		}
		out = append(out, m)
	}
	return out, nil
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
