// The mailbox: sending messages to an instance's inbox, and the message
// format.

package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Message limits and defaults.
const (
	// MaxBodySize bounds a message body in bytes, well under etcd's 1.5 MiB
	// request limit so that a message with its JSON envelope always fits.
	MaxBodySize = 64 << 10
	// MaxKindLen bounds a message kind.
	MaxKindLen = 64
	// DefaultMessageTTL is how long an unread message waits when Send is given 0.
	DefaultMessageTTL = time.Hour
	// MinMessageTTL is the shortest message TTL: etcd does not grant leases
	// shorter than 1.5 election timeouts (2 s with the default settings).
	MinMessageTTL = 2 * time.Second
	// MaxMessageTTL is the longest message TTL.
	MaxMessageTTL = 7 * 24 * time.Hour
	// maxMsgBucketWidth caps how much longer than its TTL a message may live.
	maxMsgBucketWidth = time.Minute
	// registrationCacheTTL is how long Send trusts what it read about a
	// recipient's registration, so that a burst to one recipient costs one read.
	registrationCacheTTL = time.Second
	// maxRegistrationCache bounds that cache.
	maxRegistrationCache = 1024
)

// Message kinds with a meaning for every instance.
const (
	// KindText is the kind of a message sent without one.
	KindText = "text"
	// KindControl asks the receiving instance to act on its body (ControlStop, ...).
	KindControl = "control"
	// ControlStop, as the body of a KindControl message, asks for a graceful stop.
	ControlStop = "stop"
)

// Message is one message between instances. Send fills in ID, From, To and
// SentAt; Receive and Pending also fill in Revision and Lease from etcd.
type Message struct {
	// ID sorts by send time and carries the sender (see ParseMessageID).
	ID   string `json:"id"`
	From string `json:"from"`
	To   string `json:"to"`
	// Kind tells the receiver what the body means: KindText when empty, or
	// KindControl, or any [A-Za-z0-9_.-]{1,64} the instances agree on
	// ("data_ready").
	Kind string `json:"kind"`
	// Body is UTF-8 text of at most MaxBodySize bytes.
	Body   string    `json:"body"`
	SentAt time.Time `json:"sent_at"`
	// Revision is the etcd mod revision of the message key; receivers see
	// messages in this order.
	Revision int64 `json:"revision,omitempty"`
	// Lease is the etcd lease the message expires with.
	Lease clientv3.LeaseID `json:"lease,omitempty"`
}

// IsControl reports whether m is a control message with the given body, e.g.
// m.IsControl(ControlStop).
func (m Message) IsControl(body string) bool { return m.Kind == KindControl && m.Body == body }

// wireMessage is the stored JSON value of inbox/<to>/<id> (DESIGN.md §4).
type wireMessage struct {
	V      int       `json:"v"`
	ID     string    `json:"id"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Kind   string    `json:"kind"`
	Body   string    `json:"body"`
	SentAt time.Time `json:"sent_at"`
}

// Sent describes a message that etcd accepted.
type Sent struct {
	ID  string `json:"id"`
	To  string `json:"to"`
	Key string `json:"key"` // relative to the root prefix
	// Revision is the etcd revision of the put.
	Revision int64            `json:"revision"`
	Lease    clientv3.LeaseID `json:"lease"`
	// ExpiresAt is the earliest time the message can expire if nobody reads it;
	// it is gone no later than BucketWidth(ttl) after that.
	ExpiresAt time.Time `json:"expires_at"`
	// Registered tells whether an instance with the recipient id was
	// registered, as etcd showed at most registrationCacheTTL (1 s) before the
	// message was written. A message to an unregistered id is kept and waits
	// for it until it expires.
	Registered bool `json:"registered"`
}

type registration struct {
	registered bool
	at         time.Time
}

// BroadcastFilter selects the registered instances a broadcast goes to. Empty
// fields match everything; set fields must match exactly.
type BroadcastFilter struct {
	Name  string
	Model string
}

// Mailbox sends messages to other instances and receives the messages of one
// instance (nodeID) through etcd: inbox/<to>/<msg-id> keys with TTL leases.
// It is safe for concurrent use; Receive runs at most once at a time.
//
// Guarantees (DESIGN.md §6): a message Send acknowledged is delivered at least
// once to a receiver that runs before the message's TTL is over, in etcd
// revision order (so in send order per sender), and deleted only after the
// handler returned nil. An unread message is deleted by etcd itself when its
// lease expires, with no sweeper: at least its TTL after Send was called and
// at most BucketWidth(TTL) after Send returned (etcd then revokes expired
// leases within about half a second), as long as the etcd leader does not
// change in between (a new leader extends every lease by up to its TTL unless
// etcd runs with lease checkpointing).
type Mailbox struct {
	s      *Session
	kv     clientv3.KV
	lg     *zap.Logger
	nodeID string
	idErr  error // nodeID validation, returned by every operation
	now    func() time.Time

	ids    msgIDGen
	leases leaseCache

	regMu sync.Mutex
	regs  map[string]registration // recipient id -> what Send last read

	receiving atomic.Bool

	beforeDelete func() // test hook: called before each batch of acknowledged messages is deleted
}

type mailboxOptions struct {
	lg *zap.Logger
}

// MailboxOption configures a Mailbox.
type MailboxOption func(*mailboxOptions)

// WithMailboxLogger sets the logger (default: the session's).
func WithMailboxLogger(lg *zap.Logger) MailboxOption {
	return func(o *mailboxOptions) { o.lg = lg }
}

// NewMailbox returns the mailbox of instance nodeID on session s. nodeID is
// the sender of every message it sends and the inbox Receive reads; an invalid
// id makes every operation fail with ErrInvalidID.
func NewMailbox(s *Session, nodeID string, opts ...MailboxOption) *Mailbox {
	o := mailboxOptions{lg: s.lg}
	for _, opt := range opts {
		opt(&o)
	}
	if o.lg == nil {
		o.lg = zap.NewNop()
	}
	m := &Mailbox{
		s:      s,
		kv:     s.cli.KV,
		lg:     o.lg.Named("mailbox").With(zap.String("node", nodeID)),
		nodeID: nodeID,
		idErr:  CheckID(nodeID),
		now:    time.Now,
	}
	m.ids.init()
	m.leases.init()
	m.regs = map[string]registration{}
	return m
}

// ID returns the instance id of the mailbox.
func (m *Mailbox) ID() string { return m.nodeID }

// Send writes msg to the inbox of instance to, with a lease that expires it
// after ttl (DefaultMessageTTL when 0) if nobody reads it. It fills in the id,
// sender, recipient and send time, and returns once etcd has accepted the
// message. Sending to an id that is not registered is allowed: Sent.Registered
// tells. Send retries through leader elections until ctx ends; a retry writes
// the same key with the same value, so the inbox never holds a message twice
// (a receiver that handled the first write before the retry landed gets it
// again, as at-least-once allows).
func (m *Mailbox) Send(ctx context.Context, to string, msg Message, ttl time.Duration) (Sent, error) {
	if m.idErr != nil {
		return Sent{}, m.idErr
	}
	if err := CheckID(to); err != nil {
		return Sent{}, fmt.Errorf("coord: message recipient: %w", err)
	}
	ttl, err := checkMessage(&msg, ttl)
	if err != nil {
		return Sent{}, err
	}
	start := m.now()
	msg.ID = m.ids.next(start, m.nodeID)
	msg.From, msg.SentAt = m.nodeID, start.UTC()
	registered, err := m.registered(ctx, to)
	if err != nil {
		return Sent{}, err
	}
	sent, err := m.send(ctx, to, msg, start, ttl)
	sent.Registered = registered
	return sent, err
}

// Broadcast sends msg to every registered instance that f matches, except
// this mailbox's own instance, and returns what was sent to each, in
// registry key order. All copies share one message id. On an error it returns
// the copies sent so far.
func (m *Mailbox) Broadcast(ctx context.Context, f BroadcastFilter, msg Message, ttl time.Duration) ([]Sent, error) {
	if m.idErr != nil {
		return nil, m.idErr
	}
	ttl, err := checkMessage(&msg, ttl)
	if err != nil {
		return nil, err
	}
	insts, err := m.instances(ctx)
	if err != nil {
		return nil, err
	}
	start := m.now()
	msg.ID = m.ids.next(start, m.nodeID)
	msg.From, msg.SentAt = m.nodeID, start.UTC()
	var out []Sent
	for _, in := range insts {
		if in.ID == m.nodeID || (f.Name != "" && in.Name != f.Name) || (f.Model != "" && in.Model != f.Model) {
			continue
		}
		sent, err := m.send(ctx, in.ID, msg, start, ttl)
		if err != nil {
			return out, err
		}
		sent.Registered = true
		out = append(out, sent)
	}
	return out, nil
}

// checkMessage validates the caller's part of a message and the TTL, and
// returns the TTL to use.
func checkMessage(msg *Message, ttl time.Duration) (time.Duration, error) {
	if msg.Kind == "" {
		msg.Kind = KindText
	}
	if err := checkMessageKind(msg.Kind); err != nil {
		return 0, err
	}
	if len(msg.Body) > MaxBodySize {
		return 0, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrBodyTooLarge, len(msg.Body), MaxBodySize)
	}
	if !utf8.ValidString(msg.Body) {
		return 0, fmt.Errorf("%w: body is not UTF-8 text (encode binary data, e.g. as base64)", ErrInvalidMessage)
	}
	if ttl == 0 {
		ttl = DefaultMessageTTL
	}
	if ttl < MinMessageTTL || ttl > MaxMessageTTL {
		return 0, fmt.Errorf("%w: %v, want between %v and %v", ErrInvalidTTL, ttl, MinMessageTTL, MaxMessageTTL)
	}
	return ttl, nil
}

func checkMessageKind(kind string) error {
	if len(kind) > MaxKindLen {
		return fmt.Errorf("%w: kind %q is longer than %d bytes", ErrInvalidMessage, kind, MaxKindLen)
	}
	for i := 0; i < len(kind); i++ {
		if c := kind[i]; !idByte(c) && c != '.' {
			return fmt.Errorf("%w: kind %q may only hold letters, digits, '_', '-' and '.'", ErrInvalidMessage, kind)
		}
	}
	return nil
}

// send writes one prepared message to inbox/<to>/<msg.ID> with a plain put on
// a bucket lease. The put is idempotent (same key, same value), so it is
// retried after transient failures; the key is unique because the id carries
// the sender and a per-Mailbox counter that starts at a random value.
func (m *Mailbox) send(ctx context.Context, to string, msg Message, start time.Time, ttl time.Duration) (Sent, error) {
	msg.To = to
	val, err := json.Marshal(wireMessage{V: SchemaVersion, ID: msg.ID, From: msg.From, To: to, Kind: msg.Kind, Body: msg.Body, SentAt: msg.SentAt})
	if err != nil {
		return Sent{}, fmt.Errorf("coord: encode message %s: %w", msg.ID, err)
	}
	key := InboxPrefix(to) + msg.ID
	var bo Backoff
	for {
		lease, err := m.leases.get(ctx, m.s.cli.Lease, m.now, ttl)
		if err == nil {
			var resp *clientv3.PutResponse
			resp, err = m.kv.Put(ctx, key, string(val), clientv3.WithLease(lease.id))
			if err == nil {
				return Sent{ID: msg.ID, To: to, Key: key, Revision: resp.Header.Revision, Lease: lease.id,
					ExpiresAt: start.Add(ttl)}, nil
			}
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				// The bucket lease was revoked behind our back: forget it, take another.
				m.leases.drop(lease.id)
				continue
			}
		}
		if !msgRetryable(ctx, err) {
			return Sent{}, fmt.Errorf("coord: send message %s to %s: %w", msg.ID, to, err)
		}
		m.lg.Debug("send failed, retrying", zap.String("msg", msg.ID), zap.Error(err))
		if err := bo.Wait(ctx); err != nil {
			return Sent{}, fmt.Errorf("coord: send message %s to %s: %w", msg.ID, to, err)
		}
	}
}

// registered tells whether instance id is registered, from a cache entry at
// most registrationCacheTTL old or else from etcd.
func (m *Mailbox) registered(ctx context.Context, id string) (bool, error) {
	now := m.now()
	m.regMu.Lock()
	e, ok := m.regs[id]
	m.regMu.Unlock()
	if ok && now.Sub(e.at) < registrationCacheTTL {
		return e.registered, nil
	}
	resp, err := m.kv.Get(ctx, InstanceKey(id), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("coord: look up recipient %s: %w", id, err)
	}
	m.regMu.Lock()
	defer m.regMu.Unlock()
	if len(m.regs) >= maxRegistrationCache {
		for k, e := range m.regs {
			if now.Sub(e.at) >= registrationCacheTTL {
				delete(m.regs, k)
			}
		}
	}
	if len(m.regs) < maxRegistrationCache {
		m.regs[id] = registration{registered: resp.Count > 0, at: now}
	}
	return resp.Count > 0, nil
}

// Pending returns the messages waiting in the inbox of instance id, in the
// order Receive would deliver them, without consuming them.
func (m *Mailbox) Pending(ctx context.Context, id string) ([]Message, error) {
	return pendingMessages(ctx, m.kv, m.lg, id)
}

// ListMessages is Pending without a Mailbox (and so without a session), for
// tools that only look: the messages waiting for instance id, in delivery
// order. kv must be confined to the root prefix (see Namespace).
func ListMessages(ctx context.Context, kv clientv3.KV, id string) ([]Message, error) {
	return pendingMessages(ctx, kv, zap.NewNop(), id)
}

func pendingMessages(ctx context.Context, kv clientv3.KV, lg *zap.Logger, id string) ([]Message, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	var out []Message
	if _, err := listInbox(ctx, kv, lg, id, nil, func(msg Message) error {
		out = append(out, msg)
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// msgRecipient is the part of an instance record the mailbox needs.
type msgRecipient struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Model string `json:"model"`
}

// instances lists the registered instances (id from the key, name and model
// from the record; model defaults to the id).
func (m *Mailbox) instances(ctx context.Context) ([]msgRecipient, error) {
	resp, err := m.kv.Get(ctx, InstancesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("coord: list instances: %w", err)
	}
	out := make([]msgRecipient, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), InstancesPrefix())
		if !ValidID(id) {
			continue
		}
		var ref msgRecipient
		if err := json.Unmarshal(kv.Value, &ref); err != nil {
			m.lg.Warn("skipping an instance record that does not decode", zap.String("key", string(kv.Key)), zap.Error(err))
			continue
		}
		ref.ID = id
		if ref.Model == "" {
			ref.Model = id
		}
		out = append(out, ref)
	}
	return out, nil
}

// decodeMessage turns a stored inbox key-value into a Message.
func decodeMessage(key string, value []byte, modRev, lease int64) (Message, error) {
	var w wireMessage
	if err := json.Unmarshal(value, &w); err != nil {
		return Message{}, fmt.Errorf("%w: %s: %v", ErrInvalidMessage, key, err)
	}
	if w.V != SchemaVersion {
		return Message{}, fmt.Errorf("%w: %s: schema version %d, this build reads %d", ErrInvalidMessage, key, w.V, SchemaVersion)
	}
	// The key is authoritative for the id.
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		w.ID = key[i+1:]
	}
	return Message{ID: w.ID, From: w.From, To: w.To, Kind: w.Kind, Body: w.Body, SentAt: w.SentAt,
		Revision: modRev, Lease: clientv3.LeaseID(lease)}, nil
}

// retryable reports whether err is a transient etcd failure (no leader,
// leader change, timeout, unreachable member) worth retrying while ctx lives.
func msgRetryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable
	}
	return false
}
