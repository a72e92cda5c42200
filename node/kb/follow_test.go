package kb_test

// This file tests when Follow stops (the model replaced, removed, written by
// an older node, a log gap, compacted history) and when it does not (a
// checkpoint).

import (
	"errors"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// followedModel is a model of a snapshot and a log, loaded, with a Follow
// running from its load.
func followedModel(t *testing.T, f *fixture) (st kb.State, com *kb.Committer, revs <-chan followed, done <-chan error) {
	t.Helper()
	f.writeSnapshot(t, "", 0, many(0, 50))
	com, _ = f.committer(t, 0, nil, nil)
	if err := com.Submit(f.ctx, pat(100, 1, "in", "log")); err != nil {
		t.Fatal(err)
	}
	_, st = f.load(t)
	revs, done = f.follow(t, st, false)
	return st, com, revs, done
}

// submitFollowed submits ch and returns what the follower then receives,
// failing unless that is ch alone.
func submitFollowed(t *testing.T, f *fixture, com *kb.Committer, revs <-chan followed, ch processor.Change) followed {
	t.Helper()
	if err := com.Submit(f.ctx, ch); err != nil {
		t.Fatal(err)
	}
	got := next(t, revs)
	if !reflect.DeepEqual(got.chs, processor.Changes{ch}) {
		t.Fatalf("submitted %+v, the follower got %+v", ch, got.chs)
	}
	return got
}

func waitEnd(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Follow did not end within 15 s")
	}
	return nil
}

// Follow returns ErrReplaced when the followed model is replaced as a whole
// (an import publishes a new base), removed (meta or the whole model
// deleted), written by a node of the old layout (a meta without format 1),
// or when its log skips an entry; and ErrUnknownFormat for an entry of a
// newer format.
func TestFollowStopsWhenTheModelIsReplaced(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(t *testing.T, f *fixture, st kb.State)
		want   error
	}{
		{"import", func(t *testing.T, f *fixture, st kb.State) {
			im := kb.NewImport(f.model, f.lock.Txn, kb.Meta{Model: f.model}.Encode)
			if err := im.Add(f.ctx, pat(1, 1, "imported", "x")); err != nil {
				t.Fatal(err)
			}
			if _, err := im.Publish(f.ctx, "test"); err != nil {
				t.Fatal(err)
			}
		}, kb.ErrReplaced},
		{"meta deleted", func(t *testing.T, f *fixture, st kb.State) {
			if _, err := f.cli.Delete(f.ctx, f.key(kb.MetaKey)); err != nil {
				t.Fatal(err)
			}
		}, kb.ErrReplaced},
		{"model removed", func(t *testing.T, f *fixture, st kb.State) {
			if _, err := f.cli.Delete(f.ctx, coord.ModelPrefix(f.model), clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
		}, kb.ErrReplaced},
		{"older node", func(t *testing.T, f *fixture, st kb.State) {
			f.put(t, kb.MetaKey, []byte(`{"v":1,"model":"m","writer":"old-node"}`))
		}, kb.ErrReplaced},
		{"log gap", func(t *testing.T, f *fixture, st kb.State) {
			body, err := kb.EncodeChanges(pat(101, 1, "after", "a gap"))
			if err != nil {
				t.Fatal(err)
			}
			f.put(t, kb.LogKey(st.NextSeq+1), kb.FrameLogEntry(st.NextSeq+1, true, body))
		}, kb.ErrReplaced},
		{"newer log entry", func(t *testing.T, f *fixture, st kb.State) {
			body, err := kb.EncodeChanges(pat(101, 1, "newer", "format"))
			if err != nil {
				t.Fatal(err)
			}
			v := kb.FrameLogEntry(st.NextSeq, true, body)
			v[0] = 2
			f.put(t, kb.LogKey(st.NextSeq), v)
		}, kb.ErrUnknownFormat},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := setup(t)
			st, com, revs, done := followedModel(t, f)
			// The follower is live: a change arrives.
			submitFollowed(t, f, com, revs, pat(101, 1, "followed", "x"))
			st.NextSeq++
			c.change(t, f, st)
			if err := waitEnd(t, done); !errors.Is(err, c.want) {
				t.Fatalf("Follow ended with %v, want %v", err, c.want)
			}
		})
	}
}

// A checkpoint (same base) deletes the log the follower already applied:
// Follow goes on, and later changes keep arriving.
func TestFollowContinuesAcrossACheckpoint(t *testing.T) {
	f := setup(t)
	st, com, revs, done := followedModel(t, f)
	submitFollowed(t, f, com, revs, pat(101, 1, "before", "checkpoint"))
	m, st2 := f.load(t)
	f.writeSnapshot(t, st.Base(), st2.NextSeq, m.sorted())
	if f.count(t, "log/") != 0 {
		t.Fatal("the checkpoint left log entries")
	}
	for i := range 3 {
		b := pat(uint64(102+i), 1, "after", "checkpoint", string(rune('a'+i)))
		if got := submitFollowed(t, f, com, revs, b); got.next != st2.NextSeq+uint64(i)+1 {
			t.Fatalf("after the checkpoint the follower got next %d, want %d", got.next, st2.NextSeq+uint64(i)+1)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Follow ended at a checkpoint: %v", err)
	default:
	}
}

// Follow from a revision etcd compacted away returns ErrCompacted.
func TestFollowFromCompactedHistory(t *testing.T) {
	f := setup(t)
	com, _ := f.committer(t, 0, nil, nil)
	if err := com.Submit(f.ctx, pat(1, 1, "a", "x")); err != nil {
		t.Fatal(err)
	}
	_, st := f.load(t)
	for i := range 2 { // etcd keeps the revision compacted at: compact past the next one
		if err := com.Submit(f.ctx, pat(uint64(2+i), 1, "b", "x", string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.cli.Get(f.ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.Compact(f.ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, done := f.follow(t, st, false)
	if err := waitEnd(t, done); !errors.Is(err, kb.ErrCompacted) {
		t.Fatalf("Follow from compacted history: %v, want ErrCompacted", err)
	}
}
