package nginxtest

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
)

// ntGNUBuildID is the type of the "GNU" note that holds the build-id.
const ntGNUBuildID = 3

// BuildID returns the GNU build-id of the ELF file at path in lower-case hex,
// as debuginfod and /usr/lib/debug/.build-id name it. A separate debug file
// (a -dbgsym package's .debug) carries the same id as its binary.
//
// (symbols.Binary.BuildID is the same value, but package symbols' tests use
// nginxtest, so nginxtest can't import symbols.)
func BuildID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return "", fmt.Errorf("%s: %s: %w", path, s.Name, err)
		}
		if id, ok := gnuBuildIDNote(f.ByteOrder, data); ok {
			return id, nil
		}
	}
	return "", fmt.Errorf("%s: %w", path, errNoBuildID)
}

var errNoBuildID = errors.New("no GNU build-id note")

// gnuBuildIDNote walks the notes of one SHT_NOTE section (namesz, descsz,
// type, name and desc each padded to 4 bytes) for NT_GNU_BUILD_ID of "GNU".
func gnuBuildIDNote(bo interface{ Uint32([]byte) uint32 }, data []byte) (string, bool) {
	pad := func(n uint32) int { return int((n + 3) &^ 3) }
	for len(data) >= 12 {
		nameSz, descSz, typ := bo.Uint32(data), bo.Uint32(data[4:]), bo.Uint32(data[8:])
		rest := data[12:]
		if len(rest) < pad(nameSz)+int(descSz) {
			return "", false
		}
		name := rest[:nameSz]
		desc := rest[pad(nameSz) : pad(nameSz)+int(descSz)]
		if typ == ntGNUBuildID && string(name) == "GNU\x00" && descSz > 0 {
			return hex.EncodeToString(desc), true
		}
		if len(rest) < pad(nameSz)+pad(descSz) {
			return "", false
		}
		data = rest[pad(nameSz)+pad(descSz):]
	}
	return "", false
}

// DebugFileByBuildID is where a -dbgsym package puts the separate debug info
// of the binary with that build-id: /usr/lib/debug/.build-id/xx/rest.debug.
func DebugFileByBuildID(buildID string) string {
	if len(buildID) < 3 {
		return ""
	}
	return filepath.Join("/usr/lib/debug/.build-id", buildID[:2], buildID[2:]+".debug")
}
