// katoctl cleanup: report and remove keys that no live lease explains.

package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

// cleanupBatch is how many conditional deletes go in one transaction.
const cleanupBatch = 64

// Actions cleanup reports.
const (
	actRemoved     = "removed"
	actWouldRemove = "would remove"
	actChanged     = "kept: changed or gone since read"
	actReportOnly  = "kept: report only"
)

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "report and remove keys that no live lease explains",
		Description: "Reads every key under --prefix except models/ at one revision and reports:\n" +
			"  - keys under instances/, locks/models/, lockinfo/, inbox/, history/ and control/ that carry\n" +
			"    no lease, or whose lease no longer exists (etcd deletes leased keys with their\n" +
			"    lease: these were left by older versions or written by hand);\n" +
			"  - lockinfo/<model> whose lock key is gone (or is removed by this cleanup);\n" +
			"  - keys outside the KATO layout (report only: never removed).\n" +
			"Models (models/...) are data and are never touched. Each key found is removed only\n" +
			"if it has not changed since it was read. --dry-run removes nothing. The table shows\n" +
			"what was found and what was done; -o json and -o yaml give the same as a report.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "report only; remove nothing"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return fmt.Errorf("cleanup takes no arguments, got %d", c.NArg())
			}
			return withEtcd(c, func(e env) error { return cleanup(c, e) })
		},
	}
}

// staleKey is one key cleanup found.
type staleKey struct {
	Area    string `json:"area"`
	Key     string `json:"key"`
	Lease   string `json:"lease,omitempty"` // hex, empty for none
	Problem string `json:"problem"`
	Action  string `json:"action"`
	modRev  int64
	remove  bool
}

// cleanupReport is what cleanup prints.
type cleanupReport struct {
	Prefix   string     `json:"prefix"`
	Revision int64      `json:"revision"` // the revision the keys were read at
	Checked  int        `json:"checked"`  // keys read (models/ excluded)
	DryRun   bool       `json:"dry_run"`
	Found    []staleKey `json:"found"`
	Removed  int        `json:"removed"`
}

// leasedAreas are the top-level areas whose keys always carry a lease, by
// prefix, with the name cleanup reports them under.
func leasedAreas() [][2]string {
	return [][2]string{
		{coord.InstancesPrefix(), "instances"},
		{coord.LocksPrefix(), "locks"},
		{coord.LockInfoPrefix(), "lockinfo"},
		{coord.InboxesPrefix(), "inbox"},
		{coord.HistoriesPrefix(), "history"},
		{"control/", "control"},
	}
}

func cleanup(c *cli.Context, e env) error {
	root, err := coord.NormalizePrefix(c.String("prefix"))
	if err != nil {
		return err
	}
	rep := cleanupReport{Prefix: root, DryRun: c.Bool("dry-run"), Found: []staleKey{}}
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	// Everything but models/, in one read: below models/ and above it.
	models := coord.ModelsPrefix()
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpGet("", clientv3.WithRange(models)), // "" is the root prefix itself
		clientv3.OpGet(clientv3.GetPrefixRangeEnd(models), clientv3.WithFromKey()),
	).Commit()
	if err != nil {
		return fmt.Errorf("cleanup: read keys: %w", err)
	}
	rep.Revision = resp.Header.Revision
	var kvs []*mvccpb.KeyValue
	for _, r := range resp.Responses {
		kvs = append(kvs, r.GetResponseRange().Kvs...)
	}
	rep.Checked = len(kvs)

	alive := map[int64]bool{}
	leaseAlive := func(id int64) (bool, error) {
		if ok, known := alive[id]; known {
			return ok, nil
		}
		resp, err := e.cli.TimeToLive(ctx, clientv3.LeaseID(id))
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			alive[id] = false
		case err != nil:
			return false, fmt.Errorf("cleanup: lease %x: %w", id, err)
		default:
			alive[id] = resp.TTL >= 0
		}
		return alive[id], nil
	}

	// First pass: keys with no lease or a dead one, and unknown keys.
	var infos []*mvccpb.KeyValue  // lockinfo keys whose lease is fine
	lockKeys := map[string]bool{} // lock key -> its lease is live
	for _, kv := range kvs {
		key := string(kv.Key)
		area := ""
		for _, a := range leasedAreas() {
			if strings.HasPrefix(key, a[0]) {
				area = a[1]
				break
			}
		}
		if area == "" {
			rep.Found = append(rep.Found, staleKey{Area: "unknown", Key: key, Lease: leaseName(kv.Lease),
				Problem: "not part of the KATO key layout", Action: actReportOnly})
			continue
		}
		problem := ""
		if kv.Lease == 0 {
			problem = "no lease"
		} else if ok, err := leaseAlive(kv.Lease); err != nil {
			return err
		} else if !ok {
			problem = fmt.Sprintf("lease %x no longer exists", kv.Lease)
		}
		if area == "locks" {
			lockKeys[key] = problem == ""
		}
		if problem != "" {
			rep.Found = append(rep.Found, staleKey{Area: area, Key: key, Lease: leaseName(kv.Lease), Problem: problem, modRev: kv.ModRevision, remove: true})
			continue
		}
		if area == "lockinfo" {
			infos = append(infos, kv)
		}
	}
	// Second pass: holder records whose lock key is gone or stale.
	for _, kv := range infos {
		if problem := orphanInfo(kv, lockKeys); problem != "" {
			rep.Found = append(rep.Found, staleKey{Area: "lockinfo", Key: string(kv.Key), Lease: leaseName(kv.Lease),
				Problem: problem, modRev: kv.ModRevision, remove: true})
		}
	}

	sort.SliceStable(rep.Found, func(i, j int) bool { return rep.Found[i].Key < rep.Found[j].Key })
	if err := removeStale(c, e, &rep); err != nil {
		return err
	}
	t := cliutil.Table{Header: []string{"AREA", "KEY", "LEASE", "PROBLEM", "ACTION"}}
	for _, f := range rep.Found {
		t.Rows = append(t.Rows, []string{f.Area, f.Key, orDash(f.Lease), f.Problem, f.Action})
	}
	if err := cliutil.Print(c, rep, t); err != nil {
		return err
	}
	if f := c.String("output"); f == "table" || f == "" {
		fmt.Fprintln(c.App.Writer, cleanupSummary(rep))
	}
	return nil
}

// orphanInfo says why lockinfo record kv describes no live lock, or "".
// lockKeys maps each lock key read to whether its lease is live.
func orphanInfo(kv *mvccpb.KeyValue, lockKeys map[string]bool) string {
	rec, err := coord.ParseLockInfo(kv)
	model := rec.Model
	if err == nil && rec.Key != "" {
		live, found := lockKeys[rec.Key]
		switch {
		case !found:
			return "its lock key " + rec.Key + " is gone"
		case !live:
			return "its lock key " + rec.Key + " has no live lease"
		}
		return ""
	}
	for k, live := range lockKeys {
		if live && strings.HasPrefix(k, coord.LockPrefix(model)) {
			return ""
		}
	}
	return "model " + model + " has no lock key"
}

// removeStale deletes the keys found, each only if unchanged since it was
// read, and records what happened.
func removeStale(c *cli.Context, e env, rep *cleanupReport) error {
	var batch []int // indexes into rep.Found
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ops := make([]clientv3.Op, len(batch))
		for i, fi := range batch {
			f := rep.Found[fi]
			ops[i] = clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(f.Key), "=", f.modRev)},
				[]clientv3.Op{clientv3.OpDelete(f.Key)}, nil)
		}
		ctx, cancel := cliutil.CommandContext(c)
		resp, err := e.cli.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("cleanup: remove %s and %d more: %w (%d removed before)", rep.Found[batch[0]].Key, len(batch)-1, err, rep.Removed)
		}
		for i, fi := range batch {
			f := &rep.Found[fi]
			if resp.Responses[i].GetResponseTxn().Succeeded {
				f.Action = actRemoved
				rep.Removed++
				e.lg.Info("removed stale key", zap.String("key", f.Key), zap.String("problem", f.Problem))
			} else {
				f.Action = actChanged
			}
		}
		batch = batch[:0]
		return nil
	}
	for i := range rep.Found {
		f := &rep.Found[i]
		if !f.remove {
			continue
		}
		if rep.DryRun {
			f.Action = actWouldRemove
			continue
		}
		batch = append(batch, i)
		if len(batch) == cleanupBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func cleanupSummary(rep cleanupReport) string {
	stale, unknown := 0, 0
	for _, f := range rep.Found {
		if f.remove {
			stale++
		} else {
			unknown++
		}
	}
	s := fmt.Sprintf("checked %d keys under %s (models/ excluded) at revision %d: ", rep.Checked, rep.Prefix, rep.Revision)
	switch {
	case stale == 0:
		s += "no stale keys"
	case rep.DryRun:
		s += fmt.Sprintf("%d stale keys, none removed (--dry-run)", stale)
	default:
		s += fmt.Sprintf("%d stale keys, %d removed", stale, rep.Removed)
	}
	if unknown > 0 {
		s += fmt.Sprintf("; %d unknown keys left alone", unknown)
	}
	return s
}

func leaseName(id int64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf("%x", id)
}
