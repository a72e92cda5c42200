package node

// This file tells a dead earlier run of this node's id from a live one, and
// takes its place.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// staleHolder tells whether the instance holding this node's id is a dead
// earlier run rather than a live process: a pid of this host that no longer
// runs (or is this process: a container restarted with the same pid), or a
// lease nobody renews any more. It returns how long the lease has left.
func (n *Node) staleHolder(ctx context.Context, held coord.Instance) (stale bool, left time.Duration, why string) {
	lease, err := strconv.ParseInt(held.LeaseID, 16, 64)
	if err != nil {
		return false, 0, ""
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ttl, err := n.cli.TimeToLive(tctx, clientv3.LeaseID(lease))
	if err != nil || ttl.TTL <= 0 {
		// Gone or going: the record goes with it.
		return true, 0, "its lease has expired"
	}
	left = time.Duration(ttl.TTL) * time.Second
	if n.cfg.EmbeddedEtcd && held.EmbeddedEtcd && held.Host == n.cfg.AdvertiseHost {
		// It ran the etcd this process runs now on the data dir this process
		// holds locked: it is gone (or a zombie, which holds no lock).
		return true, left, fmt.Sprintf("pid %d ran this embedded etcd, whose data dir this process now holds", held.PID)
	}
	if held.Host == n.cfg.AdvertiseHost && (held.PID == os.Getpid() || !pidAlive(held.PID)) {
		return true, left, fmt.Sprintf("pid %d of this host is no longer running", held.PID)
	}
	// A live holder renews its lease every TTL/3, so it never has less than
	// about 2/3 of the TTL left.
	if granted := time.Duration(ttl.GrantedTTL) * time.Second; left < granted*2/3-time.Second {
		return true, left, fmt.Sprintf("its lease (%v) has not been renewed for %v", granted, granted-left)
	}
	return false, left, ""
}

// takeOver revokes the lease of a dead earlier run: on the embedded etcd,
// which started with this process, it came back with the etcd's data and
// would otherwise live a whole TTL.
func (n *Node) takeOver(ctx context.Context, held coord.Instance) error {
	lease, err := strconv.ParseInt(held.LeaseID, 16, 64)
	if err != nil {
		return fmt.Errorf("node: record of %s has no lease id (%q)", held.ID, held.LeaseID)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := n.cli.Revoke(rctx, clientv3.LeaseID(lease)); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("node: revoke the lease %s of the dead earlier run: %w", held.LeaseID, err)
	}
	return nil
}

// waitForStaleHolder is register's answer to ErrIDTaken on the first epoch.
// It returns nil to retry now, or the error to give up with.
func (n *Node) waitForStaleHolder(ctx context.Context, regErr error, told *bool) error {
	held, err := coord.GetInstance(ctx, n.cli, n.cfg.ID)
	if errors.Is(err, coord.ErrNotFound) {
		return nil // gone meanwhile
	}
	if err != nil {
		return regErr
	}
	stale, left, why := n.staleHolder(ctx, held)
	if !stale {
		return fmt.Errorf("%w; stop it (katoctl stop %s) or give this node another --id", regErr, n.cfg.ID)
	}
	if n.cfg.EmbeddedEtcd && held.Host == n.cfg.AdvertiseHost {
		n.lg.Info("the id is held by an earlier run that is gone; taking it over",
			zap.Int("pid", held.PID), zap.String("why", why), zap.String("lease", held.LeaseID))
		return n.takeOver(ctx, held)
	}
	if !*told {
		*told = true
		n.lg.Warn(fmt.Sprintf("the id is held by an earlier run that is gone (%s); waiting up to %v for its lease to expire", why, left),
			zap.Int("pid", held.PID), zap.String("host", held.Host), zap.String("lease", held.LeaseID))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopCh:
		return errStop
	case <-time.After(250 * time.Millisecond):
		return nil
	}
}
