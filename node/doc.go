// Package node is the katonode runtime: it wires a Session, the Registry, the
// model lock, the Mailbox, the KATO processor and the HTTP API into the
// lifecycle of DESIGN.md §5:
//
//	session → register (a clash is a clear error) → standby (warm copy of the
//	model, requests forwarded to the holder) → model lock → catch up → running
//	(serves; every model write fenced and durable before the answer)
//
// On a lost lease the node stops writes at once (503), marks itself not
// ready, opens a new session and goes back to standby. On SIGTERM or a "stop"
// control message it drains, releases the lock, deregisters and revokes its
// lease. Node.Run blocks until then; only cmd/katonode starts it.
//
// KATO 3 sessions (sessions.go): while the node holds its model it serves
// the model's sessions, each a key sessions/<model>/<sid> under a lease of
// its own whose TTL slides with use; a session's state is written fenced by
// the model lock before the answer, and a take-over loads every session.
package node
