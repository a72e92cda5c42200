//go:build !linux

package processor

import "time"

// threadCPU falls back to wall time where thread CPU time is not available.
func threadCPU() int64 { return time.Now().UnixNano() }

// processCPU falls back to wall time where process CPU time is not available.
func processCPU() int64 { return time.Now().UnixNano() }
