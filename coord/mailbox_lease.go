// The TTL leases messages share, bucketed by expiry time.

package coord

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Messages share TTL leases, bucketed by expiry time, instead of one lease per
// message. A bucket lease is granted once, reused by every message whose
// expiry window it fits, never kept alive, and simply forgotten when it is too
// close to expiring to serve anyone.
//
// For a message with TTL ttl and bucket width w = BucketWidth(ttl), whose Send
// runs from s to r, a lease fits when its expiry X satisfies
//
//	s + ttl <= X <= r + ttl + w
//
// The client does not know X exactly: etcd starts the lease when it applies the
// grant, somewhere between sending the request (sent) and getting the answer
// (recv), so X lies in [sent+L, recv+L] for a granted TTL of L. A cached lease
// is used at time t (s <= t <= r) only if sent+L >= t+ttl and recv+L <= t+ttl+w.
// A new lease gets L = floor(ttl+w) whole seconds, which is >= ttl since
// w >= 1 s, so it always fits the message it was granted for, and it serves
// every later message of the same TTL for about w.

// maxMsgLeases bounds the cache; past it, the lease expiring first is dropped.
const maxMsgLeases = 256

// BucketWidth is how much longer than its TTL an unread message may live:
// a tenth of the TTL, at least 1 s (leases count whole seconds) and at most a
// minute.
func BucketWidth(ttl time.Duration) time.Duration {
	w := ttl / 10
	if w < time.Second {
		w = time.Second
	}
	if w > maxMsgBucketWidth {
		w = maxMsgBucketWidth
	}
	return w
}

type bucketLease struct {
	id     clientv3.LeaseID
	lo, hi time.Time // the lease expires in [lo, hi], client clock
}

type leaseCache struct {
	mu      sync.Mutex
	leases  []bucketLease
	granter chan struct{} // one grant at a time, so concurrent senders share it
}

func (c *leaseCache) init() { c.granter = make(chan struct{}, 1) }

// get returns a lease that fits a message of TTL ttl sent now, granting one
// when none in the cache does.
func (c *leaseCache) get(ctx context.Context, lessor clientv3.Lease, now func() time.Time, ttl time.Duration) (bucketLease, error) {
	w := BucketWidth(ttl)
	if l, ok := c.find(now(), ttl, w); ok {
		return l, nil
	}
	select {
	case c.granter <- struct{}{}:
	case <-ctx.Done():
		return bucketLease{}, ctx.Err()
	}
	defer func() { <-c.granter }()
	// Another sender may have granted a fitting lease while we waited.
	if l, ok := c.find(now(), ttl, w); ok {
		return l, nil
	}
	secs := int64((ttl + w) / time.Second)
	sent := now()
	resp, err := lessor.Grant(ctx, secs)
	if err != nil {
		return bucketLease{}, fmt.Errorf("grant message lease: %w", err)
	}
	recv := now()
	granted := time.Duration(resp.TTL) * time.Second
	l := bucketLease{id: resp.ID, lo: sent.Add(granted), hi: recv.Add(granted)}
	// etcd may raise a short TTL to its minimum: the message then lives longer
	// than asked, and find hands the lease only to messages it fits.
	c.mu.Lock()
	c.leases = append(c.leases, l)
	if len(c.leases) > maxMsgLeases {
		c.dropFirstExpiring()
	}
	c.mu.Unlock()
	return l, nil
}

func (c *leaseCache) find(t time.Time, ttl, w time.Duration) (bucketLease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Forget leases that expire too soon for any message.
	keep := c.leases[:0]
	for _, l := range c.leases {
		if !l.lo.Before(t.Add(MinMessageTTL)) {
			keep = append(keep, l)
		}
	}
	clear(c.leases[len(keep):])
	c.leases = keep
	minX, maxX := t.Add(ttl), t.Add(ttl+w)
	for _, l := range c.leases {
		if !l.lo.Before(minX) && !l.hi.After(maxX) {
			return l, true
		}
	}
	return bucketLease{}, false
}

func (c *leaseCache) drop(id clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range c.leases {
		if l.id == id {
			c.leases = append(c.leases[:i], c.leases[i+1:]...)
			return
		}
	}
}

func (c *leaseCache) dropFirstExpiring() {
	first := 0
	for i, l := range c.leases {
		if l.lo.Before(c.leases[first].lo) {
			first = i
		}
	}
	c.leases = append(c.leases[:first], c.leases[first+1:]...)
}
