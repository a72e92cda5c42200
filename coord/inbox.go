// The admin's view of inboxes: listing them (counts and ages, never bodies)
// and removing one nobody reads.

package coord

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// InboxSummary is one inbox as an admin sees it: how much waits and since
// when, never what the messages say.
type InboxSummary struct {
	ID      string `json:"id"`
	Pending int    `json:"pending"`
	// Oldest and Newest are the send times of the oldest and newest message
	// (from their ids, millisecond precision).
	Oldest time.Time `json:"oldest"`
	Newest time.Time `json:"newest"`
	// OldestLease is the lease of the oldest message, to ask etcd when it
	// expires (0 when it was not read: see ListInboxes).
	OldestLease clientv3.LeaseID `json:"-"`

	oldestKey string
}

// maxLeaseReads bounds how many inboxes ListInboxes reads the oldest
// message of (one transaction, each value at most MaxBodySize).
const maxLeaseReads = 64

// ListInboxes reads the keys (never the bodies) under inbox/ in one request of
// at most limit keys, and summarises them by inbox, sorted by id. more is true
// when there were more keys than limit (the summary then covers a part).
func ListInboxes(ctx context.Context, kv clientv3.KV, limit int) (inboxes []InboxSummary, more bool, err error) {
	resp, err := kv.Get(ctx, InboxesPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, false, fmt.Errorf("coord: list inboxes: %w", err)
	}
	byID := map[string]*InboxSummary{}
	for _, item := range resp.Kvs {
		id, msgID, ok := strings.Cut(string(item.Key[len(InboxesPrefix()):]), "/")
		if !ok || !ValidID(id) {
			continue
		}
		s := byID[id]
		if s == nil { // keys come sorted, and ids sort by send time: the first is the oldest
			s = &InboxSummary{ID: id, oldestKey: string(item.Key)}
			byID[id] = s
		}
		s.Pending++
		if at, _, err := ParseMessageID(msgID); err == nil {
			if s.Oldest.IsZero() || at.Before(s.Oldest) {
				s.Oldest = at
			}
			if at.After(s.Newest) {
				s.Newest = at
			}
		}
	}
	inboxes = make([]InboxSummary, 0, len(byID))
	for _, s := range byID {
		inboxes = append(inboxes, *s)
	}
	sort.Slice(inboxes, func(i, j int) bool { return inboxes[i].ID < inboxes[j].ID })
	// A keys-only read carries no leases: read the oldest message of the
	// first inboxes for theirs.
	n := min(len(inboxes), maxLeaseReads)
	if n == 0 {
		return inboxes, resp.More, nil
	}
	ops := make([]clientv3.Op, n)
	for i := range ops {
		ops[i] = clientv3.OpGet(inboxes[i].oldestKey)
	}
	tresp, err := kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, false, fmt.Errorf("coord: read the oldest messages of %d inboxes: %w", n, err)
	}
	for i, r := range tresp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
			inboxes[i].OldestLease = clientv3.LeaseID(kvs[0].Lease)
		}
	}
	return inboxes, resp.More, nil
}

// RemoveInbox deletes every message waiting for instance id, as an admin does
// with an inbox nobody will read (its instance is gone for good). It refuses
// with ErrInboxInUse while an instance with that id is registered, in the same
// transaction as the delete: that instance reads its inbox itself. It returns
// how many messages it deleted.
func RemoveInbox(ctx context.Context, kv clientv3.KV, id string) (int64, error) {
	if err := CheckID(id); err != nil {
		return 0, err
	}
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(InstanceKey(id)), "=", 0)).
		Then(clientv3.OpDelete(InboxPrefix(id), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("coord: remove inbox %s: %w", id, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w: instance %s is registered and reads its own messages", ErrInboxInUse, id)
	}
	return resp.Responses[0].GetResponseDeleteRange().Deleted, nil
}
