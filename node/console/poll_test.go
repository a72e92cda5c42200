package console

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// fixedDirectory is a directory that does not change.
type fixedDirectory []coord.Instance

func (d fixedDirectory) Instances() []coord.Instance { return d }
func (d fixedDirectory) Holders() map[string]string  { return map[string]string{} }
func (d fixedDirectory) Changed() <-chan struct{}    { return nil }

// A poll ends within its budget when etcd does not answer, however many
// leases and models there are to read.
func TestPollIsBoundedWhenEtcdIsGone(t *testing.T) {
	etc := etcdtest.New(t)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	var dir fixedDirectory
	for i := 0; i < 150; i++ {
		dir = append(dir, coord.Instance{ID: fmt.Sprintf("n%d", i), Model: fmt.Sprintf("m%d", i), LeaseID: fmt.Sprintf("%x", 1000+i)})
	}
	c := New(Config{Client: cli, Directory: dir})
	c.readOnce(context.Background(), true) // etcd answers: a normal poll
	if len(c.polled.models) != maxModelReads {
		t.Fatalf("a poll read %d models, want %d", len(c.polled.models), maxModelReads)
	}
	etc.Stop(0)
	start := time.Now()
	c.readOnce(context.Background(), true)
	took := time.Since(start)
	t.Logf("a poll with etcd gone took %v (budget %v)", took, pollBudget)
	if took > pollBudget+2*time.Second {
		t.Fatalf("a poll with etcd gone took %v, budget %v", took, pollBudget)
	}
	if len(c.polled.models) != maxModelReads || c.polled.etcd.Error == "" {
		t.Fatalf("after a failed poll: %d models kept, etcd error %q", len(c.polled.models), c.polled.etcd.Error)
	}
}

// Session keys are counted per model from their keys; a record that does not
// decode leaves its creation time unknown, and a key that is not a session's
// is not counted.
func TestReadSessionsOfBadRecords(t *testing.T) {
	etc := etcdtest.New(t)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx := context.Background()
	for _, kv := range [][2]string{ // in order of creation
		{coord.SessionKey("m", "m.1"), `{"created_at":"2026-01-02T03:04:05Z"}`},
		{coord.SessionKey("m", "m.2"), `<not json>`},
		{coord.SessionsPrefix() + "junk", `{}`},
	} {
		if _, err := cli.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	c := New(Config{Client: cli, Directory: fixedDirectory{}})
	v := c.readSessions(ctx, sessionsView{})
	if v.Error != "" || v.More || len(v.Models) != 1 {
		t.Fatalf("sessions: %+v", v)
	}
	m := v.Models[0]
	want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if m.Model != "m" || m.Count != 2 || m.Oldest == nil || !m.Oldest.Equal(want) || m.Newest != nil {
		t.Fatalf("model m: %+v", m)
	}
}
