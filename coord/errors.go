// The sentinel errors of coord.

package coord

import "errors"

// The package's sentinel errors; check them with errors.Is.
var (
	// ErrSessionClosed is returned by operations on a session after Close.
	ErrSessionClosed = errors.New("coord: session closed")
	// ErrSessionLost is returned when the session's lease expired or was revoked
	// by someone else.
	ErrSessionLost = errors.New("coord: session lease lost")
	// ErrInvalidID is returned for an instance id that is empty after sanitizing
	// or does not follow the id rules.
	ErrInvalidID = errors.New("coord: invalid instance id")
	// ErrIDTaken is returned by Register when a live instance holds the id.
	ErrIDTaken = errors.New("coord: instance id already registered")
	// ErrEtcdUnreachable is returned by Connect when no endpoint answers
	// within the dial timeout.
	ErrEtcdUnreachable = errors.New("coord: etcd does not answer")
	// ErrNotFound is returned when a key (instance, model, message) does not exist.
	ErrNotFound = errors.New("coord: not found")
	// ErrNotRegistered is returned by Update and Deregister when this session
	// does not hold the record.
	ErrNotRegistered = errors.New("coord: instance not registered by this session")

	// Model lock errors.

	// ErrLocked is returned by TryLock, and by Lock when its ctx ends, while
	// another holder has the lock; the error names the holder.
	ErrLocked = errors.New("coord: model is locked")
	// ErrLockLost is returned by a fenced write, and by Unlock, when the lock
	// that fenced it is no longer held: the session was lost or the lock key
	// was deleted (katoctl locks break). Err reports it after Lost is closed.
	ErrLockLost = errors.New("coord: model lock lost")
	// ErrNotLocked is returned by Unlock and fenced writes when the ModelLock
	// holds nothing, and by GetLock and BreakLock for a model nobody holds.
	ErrNotLocked = errors.New("coord: model lock not held")
	// ErrLockInUse is returned by Lock and TryLock when the session already has
	// a key in the model's lock queue that is not this ModelLock's (another
	// ModelLock or a concurrency.Mutex on the same session and model): the two
	// would share one key and both believe they hold the lock.
	ErrLockInUse = errors.New("coord: session already queues for this model lock")
	// ErrOutsideModel is returned by a fenced write that would change a key
	// outside models/<model>/ of the model whose lock fences it.
	ErrOutsideModel = errors.New("coord: fenced write outside the model")

	// Mailbox errors.

	// ErrBodyTooLarge is returned by Send for a body above MaxBodySize.
	ErrBodyTooLarge = errors.New("coord: message body too large")
	// ErrInvalidMessage is returned by Send for a bad kind or a body that is
	// not UTF-8 text.
	ErrInvalidMessage = errors.New("coord: invalid message")
	// ErrInvalidTTL is returned by Send for a TTL outside [MinMessageTTL, MaxMessageTTL].
	ErrInvalidTTL = errors.New("coord: message TTL out of range")
	// ErrReceiving is returned by Receive while another Receive of the same
	// Mailbox is running.
	ErrReceiving = errors.New("coord: mailbox is already receiving")
	// ErrInboxInUse is returned by RemoveInbox while the inbox's instance is
	// registered.
	ErrInboxInUse = errors.New("coord: inbox belongs to a registered instance")
)
