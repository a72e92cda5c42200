//go:build !unix

// The embedded etcd's data-dir lock where flock is missing: none.

package coord

import "os"

// lockDataDir does not guard the data dir where flock is missing.
func lockDataDir(dir string) (*os.File, error) { return nil, nil }
