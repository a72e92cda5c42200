package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

// instanceView is an instance record plus what katoctl reads beside it.
type instanceView struct {
	coord.Instance
	Uptime  string `json:"uptime"`
	TTLLeft int64  `json:"ttl_left_s"` // -1 when the lease is gone
}

func nodeCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:    "list",
			Aliases: []string{"ls"},
			Usage:   "list registered instances",
			Action: func(c *cli.Context) error {
				return withEtcd(c, func(e env) error {
					ctx, cancel := cliutil.CommandContext(c)
					defer cancel()
					list, _, err := coord.ListInstances(ctx, e.cli)
					if err != nil {
						return err
					}
					views := viewsOf(ctx, e.cli, list, time.Now())
					return cliutil.Print(c, views, instanceTable(views))
				})
			},
		},
		{
			Name:      "get",
			Usage:     "show one instance",
			ArgsUsage: "ID",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("get takes one instance id, got %d arguments", c.NArg())
				}
				return withEtcd(c, func(e env) error {
					ctx, cancel := cliutil.CommandContext(c)
					defer cancel()
					in, err := coord.GetInstance(ctx, e.cli, c.Args().First())
					if err != nil {
						return err
					}
					v := viewsOf(ctx, e.cli, []coord.Instance{in}, time.Now())[0]
					return cliutil.Print(c, v, detailTable(v))
				})
			},
		},
		{
			Name:  "watch",
			Usage: "stream registry changes until interrupted",
			Action: func(c *cli.Context) error {
				return withEtcd(c, func(e env) error {
					return watchRegistry(c, e)
				})
			},
		},
		{
			Name:   "status",
			Usage:  "etcd health and leader, instances by status, lease TTLs left",
			Action: statusAction,
		},
	}
}

func viewsOf(ctx context.Context, cli *clientv3.Client, list []coord.Instance, now time.Time) []instanceView {
	views := make([]instanceView, len(list))
	for i, in := range list {
		views[i] = instanceView{Instance: in, Uptime: fmtDuration(now.Sub(in.StartedAt)), TTLLeft: ttlLeft(ctx, cli, in.LeaseID)}
	}
	return views
}

// ttlLeft asks etcd how many seconds the lease has left, -1 if it is gone.
func ttlLeft(ctx context.Context, cli *clientv3.Client, leaseHex string) int64 {
	var id int64
	if _, err := fmt.Sscanf(leaseHex, "%x", &id); err != nil {
		return -1
	}
	resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil || resp.TTL < 0 {
		return -1
	}
	return resp.TTL
}

func instanceTable(views []instanceView) cliutil.Table {
	t := cliutil.Table{Header: []string{"ID", "NAME", "MODEL", "STATUS", "HOST", "API", "UPTIME", "TTL"}}
	for _, v := range views {
		t.Rows = append(t.Rows, []string{v.ID, v.Name, v.Model, string(v.Status), v.Host, v.APIURL, v.Uptime, fmtTTL(v.TTLLeft)})
	}
	return t
}

func detailTable(v instanceView) cliutil.Table {
	genes := "-"
	if len(v.Genes) > 0 {
		genes = string(v.Genes)
	}
	return cliutil.Table{Rows: [][]string{
		{"id", v.ID}, {"name", v.Name}, {"model", v.Model}, {"status", string(v.Status)},
		{"host", v.Host}, {"pid", fmt.Sprint(v.PID)}, {"api", v.APIURL}, {"metrics", v.MetricsURL},
		{"version", v.Version}, {"started", v.StartedAt.Format(time.RFC3339)}, {"uptime", v.Uptime},
		{"lease", v.LeaseID}, {"ttl left", fmtTTL(v.TTLLeft)}, {"genes", genes},
	}}
}

func watchRegistry(c *cli.Context, e env) error {
	format := c.String("output")
	if format == "yaml" {
		return errors.New("watch prints a line per change: use -o table or -o json")
	}
	w := c.App.Writer
	enc := json.NewEncoder(w)
	if format == "table" {
		fmt.Fprintln(w, "# EVENT ID STATUS HOST API")
	}
	err := coord.WatchInstances(c.Context, e.cli, e.lg, 0, func(ev coord.InstanceEvent) {
		if format == "json" {
			enc.Encode(ev)
			return
		}
		in := ev.Instance
		fmt.Fprintf(w, "%s %s %s %s %s\n", strings.ToUpper(string(ev.Type)), in.ID, orDash(string(in.Status)), orDash(in.Host), orDash(in.APIURL))
	})
	if errors.Is(err, context.Canceled) {
		return nil // interrupted
	}
	return err
}

// endpointStatus is one etcd endpoint's health as katoctl status shows it.
type endpointStatus struct {
	Endpoint    string   `json:"endpoint"`
	Healthy     bool     `json:"healthy"`
	Version     string   `json:"version,omitempty"`
	MemberID    string   `json:"member_id,omitempty"`
	IsLeader    bool     `json:"is_leader"`
	DBSize      int64    `json:"db_size_bytes,omitempty"`
	DBSizeInUse int64    `json:"db_size_in_use_bytes,omitempty"`
	Quota       int64    `json:"quota_bytes,omitempty"`
	Alarms      []string `json:"alarms,omitempty"`
	RaftTerm    uint64   `json:"raft_term,omitempty"`
	Error       string   `json:"error,omitempty"`
}

type clusterStatus struct {
	Endpoints      []endpointStatus       `json:"endpoints"`
	Leader         string                 `json:"leader"`
	Instances      int                    `json:"instances"`
	InstancesError string                 `json:"instances_error,omitempty"`
	ByStatus       map[coord.Status]int   `json:"by_status"`
	Leases         []instanceLeaseSummary `json:"leases"`
}

type instanceLeaseSummary struct {
	ID      string `json:"id"`
	Lease   string `json:"lease"`
	TTLLeft int64  `json:"ttl_left_s"`
}

// statusAction asks every endpoint on its own, each within --command-timeout
// and all at once, so that a dead endpoint shows as such beside the live
// ones; the registry is read through whichever endpoint answers.
func statusAction(c *cli.Context) error {
	lg, err := cliutil.Logger(c)
	if err != nil {
		return err
	}
	defer lg.Sync()
	etc, err := coord.Dial(c.Context, cliutil.ClientConfig(c), lg)
	if err != nil {
		return err
	}
	defer etc.Close()
	st := clusterStatus{ByStatus: map[coord.Status]int{}}
	eps := etc.Endpoints()
	st.Endpoints = make([]endpointStatus, len(eps))
	var alarms []*etcdserverpb.AlarmMember
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := cliutil.CommandContext(c)
			defer cancel()
			st.Endpoints[i] = endpointHealth(ctx, etc, ep)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := cliutil.CommandContext(c)
		defer cancel()
		list, _, err := coord.ListInstances(ctx, etc)
		if err != nil {
			st.InstancesError = cliutil.ErrorLine(err)
			return
		}
		st.Instances = len(list)
		for _, v := range viewsOf(ctx, etc, list, time.Now()) {
			st.ByStatus[v.Status]++
			st.Leases = append(st.Leases, instanceLeaseSummary{ID: v.ID, Lease: v.LeaseID, TTLLeft: v.TTLLeft})
		}
		if resp, err := etc.AlarmList(ctx); err == nil {
			alarms = resp.Alarms
		}
	}()
	wg.Wait()
	for i, es := range st.Endpoints {
		for _, a := range alarms {
			if es.MemberID != "" && es.MemberID == fmt.Sprintf("%x", a.MemberID) && a.Alarm != etcdserverpb.AlarmType_NONE {
				st.Endpoints[i].Alarms = append(st.Endpoints[i].Alarms, a.Alarm.String())
				st.Endpoints[i].Healthy = false
			}
		}
		if es.IsLeader {
			st.Leader = es.Endpoint
		}
	}
	if err := cliutil.Print(c, st, statusTable(st)); err != nil {
		return err
	}
	for _, es := range st.Endpoints {
		if !es.Healthy {
			return cli.Exit("", 2) // unhealthy endpoint: shown above, exit 2
		}
	}
	if st.InstancesError != "" {
		return cli.Exit("", 2)
	}
	return nil
}

func endpointHealth(ctx context.Context, cli *clientv3.Client, ep string) endpointStatus {
	es := endpointStatus{Endpoint: ep}
	resp, err := cli.Status(ctx, ep)
	if err != nil {
		es.Error = "does not answer: " + cliutil.ErrorLine(err)
		if errors.Is(err, context.DeadlineExceeded) {
			es.Error = "does not answer within --command-timeout"
		}
		return es
	}
	es.Healthy = len(resp.Errors) == 0
	es.Version = resp.Version
	es.MemberID = fmt.Sprintf("%x", resp.Header.MemberId)
	es.IsLeader = resp.Header.MemberId == resp.Leader
	es.DBSize = resp.DbSize
	es.DBSizeInUse = resp.DbSizeInUse
	es.Quota = resp.DbSizeQuota
	es.RaftTerm = resp.RaftTerm
	if len(resp.Errors) > 0 {
		es.Error = strings.Join(resp.Errors, "; ")
	}
	return es
}

func statusTable(st clusterStatus) cliutil.Table {
	t := cliutil.Table{Header: []string{"WHAT", "NAME", "STATE", "DETAIL"}}
	for _, es := range st.Endpoints {
		state := "healthy"
		if es.IsLeader {
			state = "healthy, leader"
		}
		detail := es.Error
		if es.Version != "" {
			detail = fmt.Sprintf("etcd %s, term %d, db %s (%s in use) of %s quota", es.Version, es.RaftTerm,
				fmtBytes(es.DBSize), fmtBytes(es.DBSizeInUse), fmtBytes(es.Quota))
			if len(es.Alarms) > 0 {
				detail += ", ALARM " + strings.Join(es.Alarms, ", ")
			}
			if es.Error != "" {
				detail += ", " + es.Error
			}
		}
		switch {
		case es.Version == "":
			state = "down"
		case !es.Healthy:
			state = "unhealthy"
		}
		t.Rows = append(t.Rows, []string{"endpoint", es.Endpoint, state, detail})
	}
	if st.InstancesError != "" {
		t.Rows = append(t.Rows, []string{"instances", "-", "unknown", st.InstancesError})
		return t
	}
	statuses := make([]string, 0, len(st.ByStatus))
	for s := range st.ByStatus {
		statuses = append(statuses, string(s))
	}
	sort.Strings(statuses)
	for _, s := range statuses {
		t.Rows = append(t.Rows, []string{"instances", s, fmt.Sprint(st.ByStatus[coord.Status(s)]), ""})
	}
	if st.Instances == 0 {
		t.Rows = append(t.Rows, []string{"instances", "-", "0", "none registered"})
	}
	for _, l := range st.Leases {
		t.Rows = append(t.Rows, []string{"lease", l.ID, fmtTTL(l.TTLLeft), "lease " + l.Lease})
	}
	return t
}

// fmtBytes prints a size in binary units, "-" when unknown.
func fmtBytes(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

func fmtTTL(s int64) string {
	if s < 0 {
		return "expired"
	}
	return fmt.Sprintf("%ds", s)
}

func fmtDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Truncate(time.Second).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
