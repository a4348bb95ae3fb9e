package symbols

import "errors"

// Sentinel errors; callers match them with errors.Is.
var (
	ErrNoDebugInfo      = errors.New("no DWARF debug info")
	ErrFunctionNotFound = errors.New("function not found")
	ErrTypeNotFound     = errors.New("type not found")
	ErrModuleNotFound   = errors.New("module not found")
	ErrFieldNotFound    = errors.New("field not found")
	ErrBadExpression    = errors.New("bad expression")
	ErrNoLocation       = errors.New("location not available at entry")
	ErrNotMapped        = errors.New("address not in any PT_LOAD segment")
	ErrNoParam          = errors.New("no such parameter")
	ErrNotCode          = errors.New("address not in an executable section")
)

// errNoEntry: a DWARF reader found nothing where an entry should be.
var errNoEntry = errors.New("no entry there")

// orNoEntry is err, or errNoEntry when a read returned no entry and no
// error, so that messages can wrap it with %w.
func orNoEntry(err error) error {
	if err == nil {
		return errNoEntry
	}
	return err
}
