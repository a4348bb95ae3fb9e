package target

import (
	"fmt"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Bounds on what a process can make FromPID and ModulesOf read; set them
// before the first use (zero means the default). A process over one gets
// a *symbols.LimitError naming the variable that raises it.
var (
	// MaxMappings is the most lines of /proc/PID/maps read; default
	// stacks.DefaultMaxMappings (65,536, the kernel's vm.max_map_count).
	MaxMappings int
	// MaxModules is the most files a process may map as code; default
	// stacks.DefaultMaxModules (256; Debian's nginx with every dynamic
	// module maps about 40).
	MaxModules int
)

func maxModules() int {
	if MaxModules > 0 {
		return MaxModules
	}
	return stacks.DefaultMaxModules
}

func modulesError(pid, max int) error {
	return &symbols.LimitError{Where: fmt.Sprintf("pid %d", pid), What: "files mapped as code", Got: int64(max) + 1, AtLeast: true, Limit: int64(max), Unit: "files", Field: "target.MaxModules"}
}
