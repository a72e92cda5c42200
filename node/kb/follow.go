package kb

// This file keeps a copy of a model current: Follow replays the log from a
// watch; ReadCurrent and RequestProgress tell a holder taking over how far
// the copy must be.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// Current is the model's state now, without its records: for a holder that
// takes over a copy it kept current.
type Current struct {
	Rev     int64
	Head    *Head
	MetaRev int64
	// Legacy says records of the layout before FormatVersion 1 are stored.
	Legacy bool
}

// ReadCurrent reads the model's head, the revision of its meta key, and
// whether it holds records of the old layout, at one revision.
func ReadCurrent(ctx context.Context, kv clientv3.KV, model string) (Current, error) {
	prefix := coord.ModelPrefix(model)
	one := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1)}
	resp, err := kv.Txn(ctx).Then(clientv3.OpGet(prefix+HeadKey), clientv3.OpGet(prefix+MetaKey),
		clientv3.OpGet(prefix+legacyPatterns, one...), clientv3.OpGet(prefix+legacyVectorDir, one...)).Commit()
	if err != nil {
		return Current{}, fmt.Errorf("kb: read model %s: %w", model, err)
	}
	c := Current{Rev: resp.Header.Revision}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		h, err := decodeHead(model, kvs[0].Value)
		if err != nil {
			return Current{}, err
		}
		c.Head = &h
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		c.MetaRev = kvs[0].ModRevision
	}
	c.Legacy = len(resp.Responses[2].GetResponseRange().Kvs)+len(resp.Responses[3].GetResponseRange().Kvs) > 0
	return c, nil
}

// RequestProgress asks etcd to tell every Follow of this client how far it
// is (a call with no changes), so a caller can wait until a follower has
// seen a revision.
func RequestProgress(ctx context.Context, cli *clientv3.Client) error {
	return cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}

// Follow calls fn with the changes of every revision that changed the model
// after st (a Load's State), in order, each revision's log groups at once,
// until ctx ends or fn fails. A call with no changes says every change up to
// rev was delivered (a progress notification, or a revision that wrote no
// complete group: a checkpoint, a part of a large group). A broken watch
// resumes after the last revision delivered. It returns ErrCompacted when the
// history to follow is gone, and ErrReplaced when the model was replaced
// (imported, removed, or written in the old layout by an older node): load
// again either way.
//
// fn is also told next, the log sequence number of the next entry after
// what it was given (what a Committer continuing from this copy starts at).
func Follow(ctx context.Context, cli *clientv3.Client, model string, st State, fn func(rev int64, next uint64, changes processor.Changes) error) error {
	prefix := coord.ModelPrefix(model)
	g := &groups{model: model, next: st.NextSeq}
	base := st.Base()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var progressErr error
	events := func(evs []*clientv3.Event) error {
		// etcd sends a revision's events in one response.
		for len(evs) > 0 {
			rev := evs[0].Kv.ModRevision
			k := 1
			for k < len(evs) && evs[k].Kv.ModRevision == rev {
				k++
			}
			chs, err := followRevision(model, prefix, base, g, evs[:k])
			if err != nil {
				return err
			}
			if err := fn(rev, g.next, chs); err != nil {
				return err
			}
			evs = evs[k:]
		}
		return nil
	}
	progress := func(rev int64) {
		if err := fn(rev, g.next, nil); err != nil && progressErr == nil {
			progressErr = err
			cancel()
		}
	}
	// A compacted history cannot be followed: the caller loads again.
	relist := func(context.Context) (int64, error) { return 0, ErrCompacted }
	// head, log/ and meta: what a follower needs (snapshot chunks and the
	// old layout's records, written or deleted in bulk, are not).
	err := coord.Watch(wctx, cli, zap.NewNop(), prefix+HeadKey, []clientv3.OpOption{clientv3.WithRange(prefix + MetaKey + "\x00")},
		st.Rev+1, relist, events, progress)
	if progressErr != nil {
		return progressErr
	}
	return err
}

// followRevision turns the events of one revision into the changes of the
// log groups it completes.
func followRevision(model, prefix, base string, g *groups, evs []*clientv3.Event) (processor.Changes, error) {
	var chs processor.Changes
	for _, ev := range evs {
		key := string(ev.Kv.Key[len(prefix):])
		del := ev.Type == clientv3.EventTypeDelete
		switch {
		case key == HeadKey:
			if del {
				return nil, fmt.Errorf("%w: model %s: its head was deleted", ErrReplaced, model)
			}
			h, err := decodeHead(model, ev.Kv.Value)
			if err != nil {
				return nil, err
			}
			if h.Base != base {
				return nil, fmt.Errorf("%w: model %s was replaced (base %q, followed %q)", ErrReplaced, model, h.Base, base)
			}
		case strings.HasPrefix(key, logDir) && !del:
			e, err := openLogEntry(model, key, ev.Kv.Value)
			if err != nil {
				return nil, err
			}
			more, err := g.changes(e)
			if errors.Is(err, errLogGap) {
				return nil, fmt.Errorf("%w: %v", ErrReplaced, err)
			}
			if err != nil {
				return nil, err
			}
			chs = append(chs, more...)
		case key == MetaKey:
			if del {
				return nil, fmt.Errorf("%w: model %s was removed", ErrReplaced, model)
			}
			if f := metaFormat(ev.Kv.Value); f != FormatVersion {
				return nil, fmt.Errorf("%w: model %s was written by a node of format version %d, this one follows %d", ErrReplaced, model, f, FormatVersion)
			}
		}
		// Deletes of log entries (a checkpoint) change nothing the follower
		// holds.
	}
	return chs, nil
}
