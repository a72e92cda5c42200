// The process Session: one etcd lease for the whole process, kept alive by
// its own keep-alive streams (re-sent to another member when one hangs), and
// noticed lost on this side when it can no longer be renewed.

package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultTTL is the session lease TTL when none is given.
const DefaultTTL = 10 * time.Second

// MinTTL is the smallest TTL a session accepts. etcd raises shorter grants to
// its own minimum (1.5 × election timeout); the session uses what etcd granted.
const MinTTL = time.Second

// Session owns one etcd lease for the whole process and keeps it alive.
// Everything the process writes that must vanish with it is attached to the
// lease. Done is closed when the lease is lost: expired, revoked, or not renewed
// in time because etcd could not be reached. The loss is detected on the
// client's own clock: the lease is counted as lost TTL after the last keep-alive
// request that etcd confirmed was *sent*, which is never later than etcd's own
// expiry of it.
type Session struct {
	cli   *clientv3.Client
	lg    *zap.Logger
	lease clientv3.LeaseID
	ttl   time.Duration

	done      chan struct{} // closed when the lease is lost or the session closed
	stop      chan struct{} // closed by Close to end the keep-alive loop
	loopDone  chan struct{}
	closeOnce sync.Once
	lostOnce  sync.Once
	monitors  monitorGroup // lock monitors: Close waits for them

	now func() time.Time

	mu        sync.Mutex
	expiresAt time.Time // client-side deadline of the lease
	lostErr   error
}

type sessionOptions struct {
	ttl time.Duration
	now func() time.Time // the clock Err reads (tests move it)
}

// SessionOption configures a Session.
type SessionOption func(*sessionOptions)

// WithTTL sets the lease TTL (default DefaultTTL, at least MinTTL).
func WithTTL(ttl time.Duration) SessionOption {
	return func(o *sessionOptions) { o.ttl = ttl }
}

// NewSession grants a lease and starts keeping it alive until Close or loss.
func NewSession(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{ttl: DefaultTTL, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.ttl < MinTTL {
		return nil, fmt.Errorf("coord: session TTL %v is below the minimum %v", o.ttl, MinTTL)
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	s := &Session{
		cli:      cli,
		lg:       lg.Named("session"),
		now:      o.now,
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	// The keep-alive stream opens before the lease exists: with auth its
	// open is a password check, which takes a while on a busy etcd (10,000
	// sessions opening at once lost most of their leases waiting for it),
	// and the lease's TTL does not run meanwhile.
	ka := newKeepAliver(s)
	ka.open()
	select {
	case op := <-ka.opened:
		if op.err != nil {
			ka.closeAll()
			return nil, fmt.Errorf("coord: open the session's keep-alive stream: %w", op.err)
		}
		ka.add(op, false)
	case <-ctx.Done():
		ka.closeAll()
		return nil, fmt.Errorf("coord: open the session's keep-alive stream: %w", ctx.Err())
	}
	asked := int64((o.ttl + time.Second - 1) / time.Second)
	sent := time.Now()
	resp, err := cli.Grant(ctx, asked)
	if err != nil {
		ka.closeAll()
		return nil, fmt.Errorf("coord: grant session lease: %w", err)
	}
	s.lease = resp.ID
	s.ttl = time.Duration(resp.TTL) * time.Second
	s.expiresAt = sent.Add(s.ttl)
	if resp.TTL != asked {
		s.lg.Info("etcd changed the session TTL", zap.Int64("asked-s", asked), zap.Int64("granted-s", resp.TTL))
	}
	s.lg.Debug("session started", zap.String("lease", LeaseHex(s.lease)), zap.Duration("ttl", s.ttl))
	go s.keepAlive(ka)
	return s, nil
}

// Lease returns the session's lease id.
func (s *Session) Lease() clientv3.LeaseID { return s.lease }

// TTL returns the lease TTL etcd granted.
func (s *Session) TTL() time.Duration { return s.ttl }

// Client returns the etcd client the session uses.
func (s *Session) Client() *clientv3.Client { return s.cli }

// Done is closed when the lease is lost or the session is closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why Done was closed: ErrSessionLost (wrapped with the cause) or
// ErrSessionClosed; nil while the session is live. It reads the clock too:
// once the client-side deadline has passed the session is lost, even when
// the keep-alive goroutine has not run since (a process paused longer than
// the TTL), so nobody acts on a lease etcd may have expired.
func (s *Session) Err() error {
	s.mu.Lock()
	err, exp := s.lostErr, s.expiresAt
	s.mu.Unlock()
	if err == nil && !s.now().Before(exp) {
		s.markLost(fmt.Errorf("%w: no keep-alive confirmed within the %v TTL", ErrSessionLost, s.ttl))
		s.mu.Lock()
		err = s.lostErr
		s.mu.Unlock()
	}
	return err
}

// ExpiresAt is the client-side deadline of the lease: if no keep-alive
// succeeds before it, the session counts as lost.
func (s *Session) ExpiresAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expiresAt
}

// Close stops the keep-alive and revokes the lease, so everything attached to
// it is deleted at once. It is idempotent.
func (s *Session) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.loopDone
		lost := s.Err() != nil
		s.markLost(ErrSessionClosed)
		s.monitors.closeAndWait()
		if lost {
			return // nothing to revoke
		}
		if _, rerr := s.cli.Revoke(ctx, s.lease); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			err = fmt.Errorf("coord: revoke session lease %s: %w", LeaseHex(s.lease), rerr)
		}
	})
	return err
}

func (s *Session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.mu.Lock()
		s.lostErr = err
		s.mu.Unlock()
		close(s.done)
	})
}

// keepAlive renews the lease every TTL/3 over a long-lived keep-alive
// stream: etcd checks the client's credentials when a stream opens (with
// auth, a password check), so a stream per renewal would cost etcd one per
// renewal. Each request's send time is kept (a stream answers in order), and
// the lease counts until TTL after the send time of the last request etcd
// answered, which is never later than etcd's own expiry of it. (The client's
// Lease.KeepAlive shares one stream among all leases but does not tell when
// the answered request was sent, so it cannot keep that rule.)
//
// A request that gets no answer within TTL/6 is sent again on a new
// stream, which the client opens to the next member: a stream can hang on a
// member cut off from the others, or on one that forwards to a leader that
// was cut off. Tries come faster as the deadline nears (see hedgeAfter). The first answer counts; streams that break or stay silent
// are closed (two at most are kept). Renewals go on every TTL/6 while none
// is answered, until the client-side deadline passes; then the session is
// lost. Renewals start on wall-clock ticks (see aligned).
func (s *Session) keepAlive(ka *keepAliver) {
	defer close(s.loopDone)
	interval := s.ttl / 3
	retry := interval / 2 // a busy etcd answers late: do not double its load early
	if retry < 100*time.Millisecond {
		retry = 100 * time.Millisecond
	}
	defer ka.closeAll()
	tick := min(500*time.Millisecond, interval/4)
	next := time.NewTimer(aligned(time.Now(), interval, tick))
	defer next.Stop()
	hedge := time.NewTimer(retry)
	hedge.Stop()
	defer hedge.Stop()
	pending := false
	for {
		deadline := time.NewTimer(time.Until(s.ExpiresAt()))
		select {
		case <-s.stop:
			deadline.Stop()
			return
		case <-s.done: // Err found the deadline passed
			deadline.Stop()
			return
		case <-deadline.C:
			s.lg.Warn("session lease expired: no keep-alive reached etcd in time",
				zap.String("lease", LeaseHex(s.lease)), zap.Duration("ttl", s.ttl))
			s.markLost(fmt.Errorf("%w: no keep-alive confirmed within the %v TTL", ErrSessionLost, s.ttl))
			return
		case <-next.C:
			pending = true
			ka.send(false)
			hedge.Reset(hedgeAfter(retry, time.Until(s.ExpiresAt())))
		case <-hedge.C:
			if pending {
				after := hedgeAfter(retry, time.Until(s.ExpiresAt()))
				s.lg.Debug("keep-alive not answered; sending on a new stream", zap.Duration("next-after", after))
				ka.send(true)
				hedge.Reset(after)
			}
		case o := <-ka.opened:
			ka.add(o, pending)
		case a := <-ka.answers:
			switch {
			case a.err != nil:
				if ka.drop(a.st) { // not one closed here already
					s.lg.Debug("keep-alive stream failed", zap.Error(a.err), zap.Time("expires-at", s.ExpiresAt()))
				}
			case a.ttl <= 0:
				deadline.Stop()
				lost := fmt.Errorf("%w: etcd no longer knows lease %s", ErrSessionLost, LeaseHex(s.lease))
				s.lg.Warn("session lease lost", zap.String("lease", LeaseHex(s.lease)), zap.Error(lost))
				s.markLost(lost)
				return
			default:
				s.mu.Lock()
				if exp := a.sent.Add(time.Duration(a.ttl) * time.Second); exp.After(s.expiresAt) {
					s.expiresAt = exp
				}
				s.mu.Unlock()
				ka.keepOnly(a.st)
				if pending {
					pending = false
					hedge.Stop()
					next.Reset(aligned(time.Now(), interval, tick))
				}
			}
		}
		deadline.Stop()
	}
}

// hedgeAfter is how long to wait for an answer before sending a renewal
// again on a new stream: retry, or a quarter of what is left of the lease
// when that is shorter (down to 100 ms), so that the last second before the
// deadline still sees several tries. A stream can hang for seconds: a
// follower that took a renewal just before its leader was cut off keeps
// forwarding it to the old leader, and the client's round-robin may put the
// next stream on the cut-off member itself; only a renewal sent after the
// new leader is known, to a member that reaches it, is answered. Hedges go
// out only while a renewal is unanswered, so a healthy etcd never sees them.
func hedgeAfter(retry, left time.Duration) time.Duration {
	return max(min(retry, left/4), 100*time.Millisecond)
}

// aligned returns how long from now until the last multiple of tick (on
// the wall clock) at most interval away. Sessions renewing on the same
// ticks reach etcd together, and etcd confirms its leadership once for all
// of them (a renewal waits for a linearizable read): for 10,000 idle
// sessions that costs a fraction of the renewals spread out. Rounding down,
// not up, keeps every renewal within interval of the last one, so a lease
// still outlives a crash or cut by at most TTL/3 after its last renewal
// (tick is at most interval/4, so the wait is at least 3/4 of interval).
func aligned(now time.Time, interval, tick time.Duration) time.Duration {
	at := now.Add(interval)
	at = at.Add(-time.Duration(at.UnixNano() % int64(tick)))
	return at.Sub(now)
}

// keepAliver holds the session's keep-alive streams: usually one; more
// while a renewal is hedged.
type keepAliver struct {
	s       *Session
	lc      pb.LeaseClient
	ctx     context.Context // of every stream; cancelled by closeAll
	cancel  context.CancelFunc
	streams []*kaStream // the last one is where requests go
	opening bool        // a stream is being opened
	opened  chan kaOpened
	answers chan kaAnswer
	quit    chan struct{} // closed by closeAll
	wg      sync.WaitGroup
}

// kaStream is one keep-alive stream with the send times of its requests
// that are not answered yet, oldest first.
type kaStream struct {
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
	mu     sync.Mutex
	sent   []time.Time
}

type kaAnswer struct {
	st   *kaStream
	sent time.Time
	ttl  int64
	err  error
}

func newKeepAliver(s *Session) *keepAliver {
	ctx, cancel := context.WithCancel(context.Background())
	return &keepAliver{s: s, lc: clientv3.RetryLeaseClient(s.cli), ctx: ctx, cancel: cancel,
		opened: make(chan kaOpened), answers: make(chan kaAnswer, 16), quit: make(chan struct{})}
}

// send sends a keep-alive request on the current stream, or on a new one
// when there is none or fresh is set. A new stream opens in the background
// (with auth the client first asks etcd for a token, which may hang while
// etcd is cut off): the request goes out once it is open (see add), and the
// keep-alive loop keeps watching the deadline meanwhile.
func (k *keepAliver) send(fresh bool) {
	if fresh || len(k.streams) == 0 {
		k.open()
		return
	}
	k.sendOn(k.streams[len(k.streams)-1])
}

func (k *keepAliver) sendOn(st *kaStream) {
	st.mu.Lock()
	st.sent = append(st.sent, time.Now())
	st.mu.Unlock()
	if err := st.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(k.s.lease)}); err != nil {
		// The receiver reports the stream's end.
		k.s.lg.Debug("keep-alive send failed", zap.Error(err))
	}
}

// maxKeepAliveStreams bounds the streams kept while renewals go unanswered.
const maxKeepAliveStreams = 2

// kaOpened is a stream opened in the background, or why it could not be.
type kaOpened struct {
	st  *kaStream
	err error
}

// open opens a stream in the background unless one is being opened.
func (k *keepAliver) open() {
	if k.opening {
		return
	}
	k.opening = true
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(k.ctx))
		stream, err := k.lc.LeaseKeepAlive(ctx)
		o := kaOpened{err: err}
		if err != nil {
			cancel()
		} else {
			o.st = &kaStream{stream: stream, cancel: cancel}
			k.wg.Add(1)
			go k.recv(o.st)
		}
		select {
		case k.opened <- o:
		case <-k.quit:
			cancel()
		}
	}()
}

// add takes a stream opened in the background and, when a renewal is
// pending, sends it there.
func (k *keepAliver) add(o kaOpened, pending bool) {
	k.opening = false
	if o.err != nil {
		k.s.lg.Debug("cannot open a keep-alive stream", zap.Error(o.err))
		return
	}
	k.streams = append(k.streams, o.st)
	if len(k.streams) > maxKeepAliveStreams {
		k.drop(k.streams[0])
	}
	if pending {
		k.sendOn(o.st)
	}
}

// recv passes the stream's answers on until it breaks or is closed.
func (k *keepAliver) recv(st *kaStream) {
	defer k.wg.Done()
	for {
		resp, err := st.stream.Recv()
		a := kaAnswer{st: st, err: err}
		if err == nil {
			st.mu.Lock()
			if len(st.sent) == 0 { // an answer nobody asked for
				st.mu.Unlock()
				continue
			}
			a.sent, st.sent = st.sent[0], st.sent[1:]
			st.mu.Unlock()
			a.ttl = resp.TTL
		}
		select {
		case k.answers <- a:
		case <-k.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// drop closes st and forgets it; false if it was closed already.
func (k *keepAliver) drop(st *kaStream) bool {
	for i, x := range k.streams {
		if x == st {
			k.streams = append(k.streams[:i], k.streams[i+1:]...)
			st.cancel()
			return true
		}
	}
	return false
}

// keepOnly closes every stream but st, which answered, and sends on it.
func (k *keepAliver) keepOnly(st *kaStream) {
	for _, x := range k.streams {
		if x != st {
			x.cancel()
		}
	}
	k.streams = append(k.streams[:0], st)
}

// closeAll closes the streams and waits for their receivers.
func (k *keepAliver) closeAll() {
	close(k.quit)
	k.cancel()
	for _, st := range k.streams {
		st.cancel()
	}
	k.streams = nil
	k.wg.Wait()
}

// LeaseHex formats a lease id the way concurrency.Mutex names its keys.
func LeaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%x", int64(id)) }
