package kb

// This file holds the package's sentinel errors.

import "errors"

// The package's sentinel errors; check them with errors.Is.
var (
	// ErrStopped is returned for changes a Committer never sent: its Run
	// ended (the node stopped serving) before their turn.
	ErrStopped = errors.New("kb: committer stopped; change not written")
	// ErrAborted is returned for changes queued behind a change that failed:
	// they were never sent, and the committer takes nothing more. The
	// writer reloads the model from etcd before it writes again.
	ErrAborted = errors.New("kb: change not written: an earlier change of the model failed")
	// ErrOutcomeUnknown wraps the error of a transaction that was sent but
	// whose result is not known (cancelled in flight, a timeout, a lost
	// connection, a leader change), or of a change split over several
	// transactions of which only some committed: etcd may hold it or not.
	ErrOutcomeUnknown = errors.New("kb: change sent, outcome unknown")
	// ErrTooLarge is returned by Enqueue for a record larger than
	// MaxRecordBytes: no transaction can hold it, and nothing was queued.
	ErrTooLarge = errors.New("kb: record larger than one etcd transaction holds")
	// ErrCompacted is returned by Follow when the revision to follow from is
	// gone: the caller loads the model again.
	ErrCompacted = errors.New("kb: model history compacted; reload")
	// ErrCorrupt is returned for a stored model that cannot be read: a record
	// that does not decode, a log that skips a change, a snapshot missing a
	// chunk. The model is refused, never read in part.
	ErrCorrupt = errors.New("kb: stored model is corrupt")
	// ErrUnknownFormat is returned for a model stored in a format version
	// this build does not know (written by a newer node).
	ErrUnknownFormat = errors.New("kb: stored model has an unknown format version")
	// ErrReplaced is returned by Follow when the followed model was replaced
	// as a whole (imported, removed) or written in the old layout: the
	// follower loads it again.
	ErrReplaced = errors.New("kb: model replaced; reload")
)
