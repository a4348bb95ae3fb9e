package symbols

import (
	"debug/dwarf"
	"sort"
)

// LineTable is one compile unit's line-table rows, sorted by address.
type LineTable struct {
	Rows  []dwarf.LineEntry
	Files []*dwarf.LineFile
}

// ReadLineTable reads the rows of the unit cu; an unreadable table is
// empty. It reads at most DefaultMaxLineRows rows (ReadLineTableLimit
// says when there are more).
func ReadLineTable(d *dwarf.Data, cu *dwarf.Entry) *LineTable {
	lt, _ := readLineTable(d, cu, DefaultMaxLineRows, nil)
	return lt
}

// readLineTable reads at most maxRows rows; with more, the rows read so
// far come back with over's error.
func readLineTable(d *dwarf.Data, cu *dwarf.Entry, maxRows int, over func() error) (*LineTable, error) {
	lt := &LineTable{}
	lr, err := d.LineReader(cu)
	if err != nil || lr == nil {
		return lt, nil
	}
	var overErr error
	for {
		var e dwarf.LineEntry
		if err := lr.Next(&e); err != nil {
			break
		}
		if len(lt.Rows) == maxRows {
			if over != nil {
				overErr = over()
			}
			break
		}
		lt.Rows = append(lt.Rows, e)
	}
	lt.Files = lr.Files()
	sort.SliceStable(lt.Rows, func(i, j int) bool { return lt.Rows[i].Address < lt.Rows[j].Address })
	return lt, overErr
}

// At returns the source position of pc: the last row at or before it
// (the last of several at one address, as a debugger stepping there
// shows), or "" past the end of a sequence.
func (lt *LineTable) At(pc uint64) (string, int) {
	i := sort.Search(len(lt.Rows), func(i int) bool { return lt.Rows[i].Address > pc }) - 1
	for ; i >= 0; i-- {
		r := lt.Rows[i]
		if r.EndSequence {
			return "", 0
		}
		if r.File != nil && r.Line > 0 {
			return r.File.Name, r.Line
		}
	}
	return "", 0
}

// FileName is the name of file index i of the table, "" if there is none.
func (lt *LineTable) FileName(i int) string {
	if i >= 0 && i < len(lt.Files) && lt.Files[i] != nil {
		return lt.Files[i].Name
	}
	return ""
}
