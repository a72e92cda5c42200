//go:build unix

// The embedded etcd's data-dir lock on unix: an exclusive flock on a file in
// the dir, so a second process fails at once, naming the pid that holds it.

package coord

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// dataDirLockName is the file in an embedded etcd's data dir that the process
// using the dir holds an exclusive flock on, with its pid inside.
const dataDirLockName = "katonode.lock"

// lockDataDir takes the data dir for this process. etcd itself would wait
// forever for a dir another process uses (in bbolt's flock), so this fails
// at once, naming the pid that holds it. The lock ends with the process.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, dataDirLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("coord: embedded etcd data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf("pid %d", pid)
			}
			return nil, fmt.Errorf("%w: %s is in use by %s (another katonode --embedded-etcd); stop it, or give this one its own --etcd-data-dir",
				ErrDataDirInUse, dir, holder)
		}
		return nil, fmt.Errorf("coord: lock embedded etcd data dir %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
