package processor

import (
	"syscall"
	"unsafe"
)

// threadCPU returns the CPU time of the calling OS thread (the caller locks
// it with runtime.LockOSThread), so that benchmark ratios do not depend on
// what else the machine runs.
func threadCPU() int64 { return clockCPU(3) } // CLOCK_THREAD_CPUTIME_ID

// processCPU returns the CPU time of the whole process (every thread: the
// collector's too).
func processCPU() int64 { return clockCPU(2) } // CLOCK_PROCESS_CPUTIME_ID

// clockCPU reads the CPU-time clock id, or 0 if it cannot.
func clockCPU(id uintptr) int64 {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return ts.Nano()
}
