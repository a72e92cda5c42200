// Package kb keeps a model (knowledge base) durable in etcd under
// models/<model>/, and reads it back.
//
// A model is stored as a snapshot plus a log (format.go):
//
//	head                 which snapshot holds the model, where its log starts, its base
//	meta                 the last writer and its fence; rewritten by every transaction
//	snap/<id>/<n>        the snapshot's chunks: compressed records, each under 1 MiB
//	log/<seq>            the changes made since the snapshot, in order
//	patterns/, vectors/  the layout before format version 1, read until the first checkpoint
//
// Records (codec.go) are processor.Change values: patterns, vectors and
// clear-alls, in a compact binary form that decodes without trusting a
// length. The head, every chunk and every log entry carries the format
// version; a version this build does not know refuses the model
// (ErrUnknownFormat), never reads part of it.
//
// Writing:
//
//   - Every write goes through a coord.FencedTxn: it applies only while the
//     writer holds the model lock, so a paused or cut-off node can never write
//     into a model that someone else now owns.
//   - A Committer group-commits: changes from many concurrent callers are
//     appended together as one log entry, one transaction at a time, and no
//     caller is answered before etcd holds the entry. A group larger than one
//     etcd request is written as several entries, visible only once the last
//     is written. The first failure fails everything queued behind it and
//     ends the committer; only a failed fence is a lost lock, and a
//     transaction whose result is unknown (cancelled in flight) says so
//     (ErrOutcomeUnknown).
//   - A SnapshotWriter checkpoints (Policy says when): chunks written under
//     a new id stay invisible until Publish, in one fenced transaction,
//     points the head at them and deletes the log they hold, other
//     snapshots and the old layout. A crash at any point leaves a loadable
//     model. An Import writes a whole model the same way, under a new base.
//
// Reading:
//
//   - Load streams a model at one revision (etcd's RangeStream; pages on an
//     etcd without it): the snapshot's records, then the log's groups, to a
//     Loader as they arrive.
//   - Follow then keeps a copy current from the log, one revision at a time,
//     and returns ErrReplaced when the copy must be loaded again (a new base,
//     the model removed, an older node writing, a log gap) and ErrCompacted
//     when its history is gone.
//   - Export streams snapshot and log at one revision as the export lines
//     (JSON, one record each) every release has written and imported.
package kb
