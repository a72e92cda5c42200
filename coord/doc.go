// Package coord is everything in KATO that talks to etcd: the process Session
// (one lease), the instance Registry, model locks with fencing, the Mailbox
// between instances, the key layout, and the embedded single-machine etcd.
//
// Guarantees (DESIGN.md §6):
//   - An instance id is registered by at most one live session at a time.
//   - Everything a process owns hangs on its session lease, so it disappears
//     from etcd by itself when the process dies or is cut off for longer than
//     the TTL. A session notices the loss on its own side (Done) even when etcd
//     cannot be reached.
//   - A model lock (ModelLock) follows etcd's concurrency.Mutex key protocol
//     and interoperates with it; waiters queue in order and each waits on its
//     predecessor only. Every write to models/<model>/ (and to the model's
//     KATO 3 sessions, sessions/<model>/) goes through a
//     FencedTxn whose If compares the lock key's create revision (the fence),
//     so a holder that was paused or cut off past its lease cannot write
//     after someone else took the lock (ErrLockLost).
//   - A message (Mailbox) acknowledged by Send is delivered at least once, in
//     etcd revision order, to a receiver that runs before its TTL is over, and
//     deleted only after the handler returned nil; unread, it is deleted by
//     etcd when its (shared, bucketed) lease expires, with no sweeper.
//   - Every key is relative to the root prefix (default "/kato/"), applied with
//     etcd's namespace wrapper on the client (see Connect and Namespace).
//
// coord has no HTTP and no processor logic, and never imports node.
package coord
