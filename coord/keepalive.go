// Keep-alive streams for sessions: KeepAlives sends the renewals of the
// sessions of one etcd client on a few long-lived LeaseKeepAlive streams,
// and hands each answer to its session with the send time of the request it
// answers.

package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// errKeepAlivesClosed is why a session cannot start on a closed KeepAlives.
var errKeepAlivesClosed = errors.New("coord: keep-alives closed")

// maxKeepAliveStreams bounds the streams kept while renewals go unanswered.
const maxKeepAliveStreams = 2

// KeepAlives keeps the leases of the sessions of one etcd client alive over
// shared keep-alive streams, the way the client's Lease.KeepAlive puts every
// lease of a client on one stream, but telling each session when the request
// etcd answered was sent: a session counts its lease until that time plus the
// TTL. etcd checks the client's credentials when a stream opens (with auth, a
// password check), so sessions sharing streams cost etcd one check per
// stream, not one per session.
//
// Renewals go on the current stream: the last one that answered, or the
// newest (etcd answers a stream in order). A session whose renewal is not
// answered in time sends it again on another stream than the one it used,
// opening one if there is none; one stream opens at a time, and every
// session hedging meanwhile waits for it and shares it. An answer proves its
// stream works: it becomes the current one, the streams opened before it are
// closed, and at most maxKeepAliveStreams are kept.
// Answers go to their sessions by lease ID without waiting for any session.
//
// Whoever owns the client owns its KeepAlives: pass it to each session with
// WithKeepAlives, and Close it after the sessions. A session still open when
// its KeepAlives closes is lost at once, since nothing renews its lease.
type KeepAlives struct {
	cli     *clientv3.Client
	lc      pb.LeaseClient
	lg      *zap.Logger
	private bool // one session's, closed when the session ends

	ctx    context.Context // of every stream; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // stream openers, senders and receivers
	opens  atomic.Int64   // streams opened (tests count them)

	mu      sync.Mutex
	closed  bool
	members map[clientv3.LeaseID]*kaMember
	streams []*kaStream                    // oldest first; renewals go on the last
	seq     uint64                         // of the last stream opened
	opening *kaOpening                     // the open under way; nil if none
	waiting map[clientv3.LeaseID]*kaMember // renewals for the stream being opened
}

// kaMember is a session renewed by a KeepAlives.
type kaMember struct {
	s       *Session
	lastSeq uint64 // the stream its last renewal went on (k.mu)
}

// kaOpening is a stream being opened; done is closed when it ends, with
// err set if it failed.
type kaOpening struct {
	done chan struct{}
	err  error
}

// kaStream is one keep-alive stream: its queue of renewals to send, sent by
// its sender goroutine, and the send times of requests not answered yet.
type kaStream struct {
	seq    uint64
	ctx    context.Context
	cancel context.CancelFunc
	stream pb.Lease_LeaseKeepAliveClient
	wake   chan struct{} // the queue is not empty

	mu     sync.Mutex
	queue  []clientv3.LeaseID // each lease once
	queued map[clientv3.LeaseID]bool
	sent   map[clientv3.LeaseID][]time.Time // oldest first
}

// NewKeepAlives returns the keep-alive streams for the sessions of cli.
// Close it after them.
func NewKeepAlives(cli *clientv3.Client, lg *zap.Logger) *KeepAlives {
	if lg == nil {
		lg = zap.NewNop()
	}
	return newKeepAlives(cli, lg.Named("keepalives"), false)
}

func newKeepAlives(cli *clientv3.Client, lg *zap.Logger, private bool) *KeepAlives {
	ctx, cancel := context.WithCancel(context.Background())
	return &KeepAlives{cli: cli, lc: clientv3.RetryLeaseClient(cli), lg: lg, private: private,
		ctx: ctx, cancel: cancel,
		members: map[clientv3.LeaseID]*kaMember{}, waiting: map[clientv3.LeaseID]*kaMember{}}
}

// Close closes the streams and waits for their goroutines. Sessions still
// renewed by it are lost. It is idempotent.
func (k *KeepAlives) Close() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		k.wg.Wait()
		return
	}
	k.closed = true
	left := make([]*kaMember, 0, len(k.members))
	for _, m := range k.members {
		left = append(left, m)
	}
	clear(k.members)
	clear(k.waiting)
	for _, st := range k.streams {
		st.cancel()
	}
	k.streams = nil
	k.mu.Unlock()
	k.cancel()
	for _, m := range left {
		m.s.markLost(fmt.Errorf("%w: its keep-alives were closed", ErrSessionLost))
	}
	k.wg.Wait()
}

// ready returns once a stream is open, opening one if there is none, or
// why it could not be opened. A session waits for it before its lease is
// granted: with auth an open is a password check, which takes a while on a
// busy etcd, and the lease's TTL does not run meanwhile.
func (k *KeepAlives) ready(ctx context.Context) error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return errKeepAlivesClosed
	}
	if len(k.streams) > 0 {
		k.mu.Unlock()
		return nil
	}
	op := k.open()
	k.mu.Unlock()
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// join starts renewing s's lease.
func (k *KeepAlives) join(s *Session) (*kaMember, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errKeepAlivesClosed
	}
	m := &kaMember{s: s}
	k.members[s.lease] = m
	return m, nil
}

// leave stops renewing m's lease; a private KeepAlives closes.
func (k *KeepAlives) leave(m *kaMember) {
	k.mu.Lock()
	if k.members[m.s.lease] == m {
		delete(k.members, m.s.lease)
		delete(k.waiting, m.s.lease)
	}
	k.mu.Unlock()
	if k.private {
		k.Close()
	}
}

// renew sends a renewal of m's lease on the current stream (the last one
// that answered, or the newest). A hedge goes on another stream than the one
// m's last renewal went on: the current one if it is another, else the next
// one opened (in the background: with auth the client
// first asks etcd for a token, which may hang while etcd is cut off).
func (k *KeepAlives) renew(m *kaMember, hedge bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || k.members[m.s.lease] != m {
		return
	}
	if n := len(k.streams); n > 0 {
		if st := k.streams[n-1]; !hedge || st.seq != m.lastSeq {
			m.lastSeq = st.seq
			st.enqueue(m.s.lease)
			return
		}
	}
	k.waiting[m.s.lease] = m
	k.open()
}

// open starts opening a stream unless one is being opened, and returns
// that open; k.mu held.
func (k *KeepAlives) open() *kaOpening {
	if k.opening != nil {
		return k.opening
	}
	op := &kaOpening{done: make(chan struct{})}
	k.opening = op
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer close(op.done)
		k.opens.Add(1)
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(k.ctx))
		stream, err := k.lc.LeaseKeepAlive(ctx)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.opening = nil
		if err == nil && k.closed {
			err = errKeepAlivesClosed
		}
		if err != nil {
			cancel()
			op.err = err
			clear(k.waiting) // each tries again when its hedge is due
			k.lg.Debug("cannot open a keep-alive stream", zap.Error(err))
			return
		}
		k.seq++
		st := &kaStream{seq: k.seq, ctx: ctx, cancel: cancel, stream: stream, wake: make(chan struct{}, 1),
			queued: map[clientv3.LeaseID]bool{}, sent: map[clientv3.LeaseID][]time.Time{}}
		k.streams = append(k.streams, st)
		if len(k.streams) > maxKeepAliveStreams {
			k.drop(k.streams[0])
		}
		for id, m := range k.waiting {
			m.lastSeq = st.seq
			st.enqueue(id)
		}
		clear(k.waiting)
		k.wg.Add(2)
		go k.send(st)
		go k.recv(st)
	}()
	return op
}

// enqueue queues a renewal of lease id unless one is queued already.
func (st *kaStream) enqueue(id clientv3.LeaseID) {
	st.mu.Lock()
	if !st.queued[id] {
		st.queued[id] = true
		st.queue = append(st.queue, id)
	}
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// send sends the stream's queued renewals until it is closed. A send can
// block (a member that does not read fills the stream's window), so nobody
// else waits for it. The send time of each request is taken just before it
// goes out; a lease whose session left meanwhile is not renewed.
func (k *KeepAlives) send(st *kaStream) {
	defer k.wg.Done()
	for {
		select {
		case <-st.ctx.Done():
			return
		case <-st.wake:
		}
		st.mu.Lock()
		batch := st.queue
		st.queue = nil
		clear(st.queued)
		st.mu.Unlock()
		k.mu.Lock()
		ids := batch[:0]
		for _, id := range batch {
			if k.members[id] != nil {
				ids = append(ids, id)
			}
		}
		k.mu.Unlock()
		for _, id := range ids {
			st.mu.Lock()
			st.sent[id] = append(st.sent[id], time.Now())
			st.mu.Unlock()
			if err := st.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
				// The receiver reports the stream's end.
				k.lg.Debug("keep-alive send failed", zap.Error(err))
				return
			}
		}
	}
}

// recv hands the stream's answers to their sessions until it breaks or is
// closed. Each answer is matched to the oldest unanswered request for its
// lease on this stream.
func (k *KeepAlives) recv(st *kaStream) {
	defer k.wg.Done()
	for {
		resp, err := st.stream.Recv()
		if err != nil {
			k.mu.Lock()
			if k.drop(st) { // not one closed here already
				k.lg.Debug("keep-alive stream failed", zap.Error(err))
			}
			k.mu.Unlock()
			return
		}
		id := clientv3.LeaseID(resp.ID)
		st.mu.Lock()
		times := st.sent[id]
		if len(times) == 0 { // an answer nobody asked for
			st.mu.Unlock()
			continue
		}
		sent := times[0]
		if len(times) == 1 {
			delete(st.sent, id)
		} else {
			st.sent[id] = times[1:]
		}
		st.mu.Unlock()
		k.mu.Lock()
		k.keepFrom(st)
		m := k.members[id]
		delete(k.waiting, id)
		k.mu.Unlock()
		if m != nil {
			m.s.answered(sent, resp.TTL)
		}
	}
}

// keepFrom closes the streams opened before st, which answered, and makes
// st the one renewals go on: a newer stream has not shown that it works (it
// may sit on a member that was cut off), so it is kept for the renewals in
// flight on it but gets no new ones; k.mu held.
func (k *KeepAlives) keepFrom(st *kaStream) {
	kept, found := k.streams[:0], false
	for _, x := range k.streams {
		switch {
		case x == st:
			found = true
		case x.seq < st.seq:
			x.cancel()
		default:
			kept = append(kept, x)
		}
	}
	if found { // not closed meanwhile
		kept = append(kept, st)
	}
	clear(k.streams[len(kept):])
	k.streams = kept
}

// drop closes st and forgets it, false if it was closed already; k.mu held.
func (k *KeepAlives) drop(st *kaStream) bool {
	for i, x := range k.streams {
		if x == st {
			k.streams = append(k.streams[:i], k.streams[i+1:]...)
			st.cancel()
			return true
		}
	}
	return false
}
