// Package kb keeps a model (knowledge base) durable in etcd under
// models/<model>/, and reads it back.
//
//   - Every write goes through a coord.FencedTxn: it applies only while the
//     writer holds the model lock, so a paused or cut-off node can never write
//     into a model that someone else now owns.
//   - A Committer group-commits: changes from many concurrent callers are
//     written together in one transaction, one transaction at a time, and no
//     caller is answered before etcd has accepted the transaction that holds
//     its change. A change set larger than a transaction is split over
//     several, in order. The first failure fails everything queued behind it
//     and ends the committer; only a failed fence is a lost lock.
//   - Load streams a model at one revision (etcd's RangeStream), reporting
//     progress; Follow then watches the model from the next revision, one
//     whole revision at a time (warm standby).
//
// The package stores opaque records under keys relative to the model prefix
// ("patterns/<hash>", "vectors/<hash>", "meta"); encoding is the caller's.
package kb
