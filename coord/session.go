// The process Session: one etcd lease for the whole process, renewed over
// keep-alive streams of its own or shared with the client's other sessions
// (KeepAlives), and noticed lost on this side when it can no longer be
// renewed.

package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

	ka        *KeepAlives
	member    *kaMember     // in ka
	answer    chan struct{} // an answer came (cap 1; see answered)
	mu        sync.Mutex
	expiresAt time.Time // client-side deadline of the lease
	gone      bool      // etcd answered that it no longer knows the lease
	lostErr   error
}

type sessionOptions struct {
	ttl time.Duration
	ka  *KeepAlives
	now func() time.Time // the clock Err reads (tests move it)
}

// SessionOption configures a Session.
type SessionOption func(*sessionOptions)

// WithTTL sets the lease TTL (default DefaultTTL, at least MinTTL).
func WithTTL(ttl time.Duration) SessionOption {
	return func(o *sessionOptions) { o.ttl = ttl }
}

// WithKeepAlives renews the session over k's streams, shared with the other
// sessions of the client; k must be of the session's client. Without it the
// session opens streams of its own.
func WithKeepAlives(k *KeepAlives) SessionOption {
	return func(o *sessionOptions) { o.ka = k }
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
		ka:       o.ka,
		answer:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	if s.ka == nil {
		s.ka = newKeepAlives(cli, s.lg, true)
	} else if s.ka.cli != cli {
		return nil, errors.New("coord: the session's keep-alives are of another client")
	}
	// A keep-alive stream opens before the lease exists: with auth its
	// open is a password check, which takes a while on a busy etcd (10,000
	// sessions opening at once lost most of their leases waiting for it),
	// and the lease's TTL does not run meanwhile.
	if err := s.ka.ready(ctx); err != nil {
		s.closePrivate()
		return nil, fmt.Errorf("coord: open the session's keep-alive stream: %w", err)
	}
	asked := int64((o.ttl + time.Second - 1) / time.Second)
	sent := time.Now()
	resp, err := cli.Grant(ctx, asked)
	if err != nil {
		s.closePrivate()
		return nil, fmt.Errorf("coord: grant session lease: %w", err)
	}
	s.lease = resp.ID
	s.ttl = time.Duration(resp.TTL) * time.Second
	s.expiresAt = sent.Add(s.ttl)
	if s.member, err = s.ka.join(s); err != nil {
		if _, rerr := cli.Revoke(ctx, s.lease); rerr != nil {
			err = errors.Join(err, fmt.Errorf("revoke lease %s: %w", LeaseHex(s.lease), rerr))
		}
		return nil, fmt.Errorf("coord: start renewing the session lease: %w", err)
	}
	if resp.TTL != asked {
		s.lg.Info("etcd changed the session TTL", zap.Int64("asked-s", asked), zap.Int64("granted-s", resp.TTL))
	}
	s.lg.Debug("session started", zap.String("lease", LeaseHex(s.lease)), zap.Duration("ttl", s.ttl))
	go s.keepAlive()
	return s, nil
}

// closePrivate closes the session's keep-alives if they are its own.
func (s *Session) closePrivate() {
	if s.ka.private {
		s.ka.Close()
	}
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

// answered takes etcd's answer to a renewal sent at sent: the lease counts
// until sent + ttl, or is gone if ttl <= 0. The keep-alive loop is told
// without waiting for it.
func (s *Session) answered(sent time.Time, ttl int64) {
	s.mu.Lock()
	if s.lostErr == nil {
		if ttl <= 0 {
			s.gone = true
		} else if exp := sent.Add(time.Duration(ttl) * time.Second); exp.After(s.expiresAt) {
			s.expiresAt = exp
		}
	}
	s.mu.Unlock()
	select {
	case s.answer <- struct{}{}:
	default:
	}
}

func (s *Session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.mu.Lock()
		s.lostErr = err
		s.mu.Unlock()
		close(s.done)
	})
}

// keepAlive renews the lease every TTL/3 over long-lived keep-alive
// streams (KeepAlives): etcd checks the client's credentials when a stream
// opens (with auth, a password check), so a stream per renewal would cost
// etcd one per renewal. Each request's send time is kept (a stream answers
// in order), and the lease counts until TTL after the send time of the last
// request etcd answered, which is never later than etcd's own expiry of it.
// (The client's Lease.KeepAlive shares one stream among all leases but does
// not tell when the answered request was sent, so it cannot keep that rule.)
//
// A request that gets no answer within TTL/6 is sent again on a newer
// stream, which the client opens to the next member: a stream can hang on a
// member cut off from the others, or on one that forwards to a leader that
// was cut off. Tries come faster as the deadline nears (see hedgeAfter).
// The first answer counts; streams that break or stay silent are closed
// (two at most are kept). Renewals go on every TTL/6 while none is
// answered, until the client-side deadline passes; then the session is
// lost. Renewals start on wall-clock ticks (see aligned).
func (s *Session) keepAlive() {
	defer close(s.loopDone)
	defer s.ka.leave(s.member)
	interval := s.ttl / 3
	retry := interval / 2 // a busy etcd answers late: do not double its load early
	if retry < 100*time.Millisecond {
		retry = 100 * time.Millisecond
	}
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
			s.ka.renew(s.member, false)
			hedge.Reset(hedgeAfter(retry, time.Until(s.ExpiresAt())))
		case <-hedge.C:
			if pending {
				after := hedgeAfter(retry, time.Until(s.ExpiresAt()))
				s.lg.Debug("keep-alive not answered; sending on a newer stream", zap.Duration("next-after", after))
				s.ka.renew(s.member, true)
				hedge.Reset(after)
			}
		case <-s.answer:
			s.mu.Lock()
			gone := s.gone
			s.mu.Unlock()
			if gone {
				deadline.Stop()
				lost := fmt.Errorf("%w: etcd no longer knows lease %s", ErrSessionLost, LeaseHex(s.lease))
				s.lg.Warn("session lease lost", zap.String("lease", LeaseHex(s.lease)), zap.Error(lost))
				s.markLost(lost)
				return
			}
			if pending {
				pending = false
				hedge.Stop()
				next.Reset(aligned(time.Now(), interval, tick))
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

// LeaseHex formats a lease id the way concurrency.Mutex names its keys.
func LeaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%x", int64(id)) }
