package main

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
)

func TestCleanupFindsAndRemovesStaleKeys(t *testing.T) {
	c, flags := registered(t, sampleInstances()[0]) // instances/alpha, on a live lease
	cli := katoClient(t, c)
	ctx := testCtx(t)
	held := holdLock(t, cli, "held", "node-a", "host-1") // live lock key and lockinfo
	seedModel(t, cli, "data", 3, 1)
	lease, err := cli.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}

	// What older versions or a hand might leave behind.
	stale := map[string]string{ // key -> problem
		"instances/ghost":              "no lease",
		"locks/models/old/694d0000abc": "no lease",
		"lockinfo/nolease":             "no lease",
		"inbox/alpha/01HZZZ":           "no lease",
		"control/alpha":                "no lease",
		// Live leases, but the lock keys they name are gone or stale.
		"lockinfo/orphan": "its lock key locks/models/orphan/1234 is gone",
		"lockinfo/old":    "its lock key locks/models/old/694d0000abc has no live lease",
		"lockinfo/bare":   "model bare has no lock key",
	}
	unknown := []string{"junk/thing", "zzz", "locks/other"}
	put := func(key, val string, opts ...clientv3.OpOption) {
		t.Helper()
		if _, err := cli.Put(ctx, key, val, opts...); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"instances/ghost", "locks/models/old/694d0000abc", "inbox/alpha/01HZZZ", "control/alpha"} {
		put(k, `{"v":1}`)
	}
	put("lockinfo/nolease", `{"v":1,"id":"x","key":"locks/models/nolease/1"}`)
	put("lockinfo/orphan", `{"v":1,"id":"x","key":"locks/models/orphan/1234"}`, clientv3.WithLease(lease.ID))
	put("lockinfo/old", `{"v":1,"id":"x","key":"locks/models/old/694d0000abc"}`, clientv3.WithLease(lease.ID))
	put("lockinfo/bare", `not json`, clientv3.WithLease(lease.ID))
	for _, k := range unknown {
		put(k, "?")
	}
	put("models/data/patterns/unleased-junk", "never touched by cleanup")
	live := []string{"instances/alpha", held.Key(), "lockinfo/held"}

	exists := func(key string) bool {
		t.Helper()
		resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count == 1
	}
	checkReport := func(rep cleanupReport, action string) {
		t.Helper()
		got := map[string]staleKey{}
		for _, f := range rep.Found {
			got[f.Key] = f
		}
		if len(got) != len(stale)+len(unknown) {
			t.Errorf("found %d keys, want %d: %+v", len(got), len(stale)+len(unknown), rep.Found)
		}
		for k, problem := range stale {
			if f := got[k]; f.Problem != problem || f.Action != action {
				t.Errorf("%s: %+v, want problem %q, action %q", k, f, problem, action)
			}
		}
		for _, k := range unknown {
			if f := got[k]; f.Area != "unknown" || f.Action != actReportOnly {
				t.Errorf("%s: %+v", k, f)
			}
		}
		if f := got["lockinfo/orphan"]; f.Lease != leaseName(int64(lease.ID)) {
			t.Errorf("lockinfo/orphan lease %q, want %x", f.Lease, lease.ID)
		}
	}

	// --dry-run reports everything and removes nothing.
	r := katoctl(t, nil, append(flags, "-o", "json", "cleanup", "--dry-run")...)
	if r.code != 0 {
		t.Fatalf("cleanup --dry-run: exit %d: %s", r.code, r.stderr)
	}
	var rep cleanupReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	checkReport(rep, actWouldRemove)
	if !rep.DryRun || rep.Removed != 0 || rep.Prefix != coord.DefaultPrefix {
		t.Fatalf("report %+v", rep)
	}
	for k := range stale {
		if !exists(k) {
			t.Fatalf("--dry-run removed %s", k)
		}
	}

	// The table names every key and says what was done.
	r = katoctl(t, nil, append(flags, "cleanup")...)
	if r.code != 0 {
		t.Fatalf("cleanup: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2+len(stale)+len(unknown) || !strings.HasPrefix(lines[0], "AREA") {
		t.Fatalf("cleanup table:\n%s", r.stdout)
	}
	for k := range stale {
		if !containsLine(lines, k, actRemoved) {
			t.Errorf("table has no row %q ... %q:\n%s", k, actRemoved, r.stdout)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "8 stale keys, 8 removed; 3 unknown keys left alone") {
		t.Errorf("summary %q", last)
	}
	for k := range stale {
		if exists(k) {
			t.Errorf("cleanup left %s", k)
		}
	}
	for _, k := range append(append(live, unknown...), "models/data/patterns/unleased-junk") {
		if !exists(k) {
			t.Errorf("cleanup removed %s", k)
		}
	}
	if _, ok := held.Fence(); !ok {
		t.Fatal("cleanup broke a live lock")
	}
	if n := len(modelKeys(t, cli, "data")); n != 5 {
		t.Fatalf("model data has %d keys after cleanup, want 5", n)
	}

	// A second run finds only the unknown keys.
	r = katoctl(t, nil, append(flags, "-o", "json", "cleanup")...)
	rep = cleanupReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
		t.Fatalf("second cleanup: exit %d, %v: %s", r.code, err, r.stderr)
	}
	var keys []string
	for _, f := range rep.Found {
		keys = append(keys, f.Key)
	}
	sort.Strings(keys)
	if strings.Join(keys, " ") != "junk/thing locks/other zzz" || rep.Removed != 0 {
		t.Fatalf("second cleanup found %v, removed %d", keys, rep.Removed)
	}
}

func TestCleanupNothingToDo(t *testing.T) {
	_, flags := registered(t, sampleInstances()...)
	r := katoctl(t, nil, append(flags, "cleanup")...)
	if r.code != 0 || !strings.Contains(r.stdout, "checked 2 keys under /kato/ (models/ excluded) at revision ") || !strings.Contains(r.stdout, "no stale keys") {
		t.Fatalf("exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	if r := katoctl(t, nil, append(flags, "cleanup", "extra")...); r.code != 1 {
		t.Fatalf("cleanup with an argument: exit %d", r.code)
	}
}

// containsLine reports whether a line holds all of parts.
func containsLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
