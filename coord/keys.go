// The key layout below the root prefix (DESIGN.md §4): one function per key
// or prefix KATO writes.

package coord

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the root of every key KATO writes.
const DefaultPrefix = "/kato/"

// SchemaVersion is the "v" field of every JSON value KATO writes.
const SchemaVersion = 1

// Key layout below the root prefix (DESIGN.md §4). All functions return keys
// relative to the prefix; the namespaced client adds it.
const (
	instancesDir = "instances/"
	locksDir     = "locks/models/"
	lockInfoDir  = "lockinfo/"
	modelsDir    = "models/"
	inboxDir     = "inbox/"
	historyDir   = "history/"
)

// InstanceKey is the registry key of an instance.
func InstanceKey(id string) string { return instancesDir + id }

// InstancesPrefix is the prefix of all registry keys.
func InstancesPrefix() string { return instancesDir }

// LockPrefix is the concurrency.Mutex prefix of a model's lock.
func LockPrefix(model string) string { return locksDir + model + "/" }

// LocksPrefix is the prefix of all model locks.
func LocksPrefix() string { return locksDir }

// LockInfoKey holds the current holder of a model's lock.
func LockInfoKey(model string) string { return lockInfoDir + model }

// LockInfoPrefix is the prefix of all lock-holder records.
func LockInfoPrefix() string { return lockInfoDir }

// ModelPrefix is the prefix of everything stored for a model.
func ModelPrefix(model string) string { return modelsDir + model + "/" }

// ModelsPrefix is the prefix of all models.
func ModelsPrefix() string { return modelsDir }

// InboxPrefix is the prefix of an instance's messages.
func InboxPrefix(id string) string { return inboxDir + id + "/" }

// InboxesPrefix is the prefix of all inboxes.
func InboxesPrefix() string { return inboxDir }

// HistoryKey holds the messages an instance received lately (History).
func HistoryKey(id string) string { return historyDir + id }

// HistoriesPrefix is the prefix of all message histories.
func HistoriesPrefix() string { return historyDir }

// NormalizePrefix makes a root prefix absolute-looking and slash-terminated:
// "kato" and "/kato" both become "/kato/". An empty prefix is refused.
func NormalizePrefix(p string) (string, error) {
	p = strings.TrimSpace(p)
	if p == "" || strings.Trim(p, "/") == "" {
		return "", fmt.Errorf("coord: key prefix %q: must name a directory such as %q", p, DefaultPrefix)
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p, nil
}
