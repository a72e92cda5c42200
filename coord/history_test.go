package coord_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kato-coord/kato/coord"
)

// The history keeps the last MaxHistory messages with bodies cut on a rune
// boundary, publishes them under the session's lease, and goes with it.
func TestHistoryBoundedPublishedAndGoneWithTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := newClient(t)
	var h coord.History
	for i := 0; i < coord.MaxHistory+7; i++ {
		h.Add(coord.Message{ID: fmt.Sprint(i), From: "x", Kind: "text", Body: strings.Repeat("é", coord.HistoryBodyMax)}, time.Now())
	}
	list, version := h.List()
	if len(list) != coord.MaxHistory || list[0].ID != "7" || version != uint64(coord.MaxHistory+7) {
		t.Fatalf("history holds %d from %s (version %d)", len(list), list[0].ID, version)
	}
	if b := list[0].Body; len(b) > coord.HistoryBodyMax || !utf8.ValidString(b) || !list[0].Truncated {
		t.Fatalf("body of %d bytes, valid %v, truncated %v", len(b), utf8.ValidString(b), list[0].Truncated)
	}
	if got, err := coord.GetHistory(ctx, cli, "n1"); err != nil || len(got) != 0 {
		t.Fatalf("history of an instance that published none: %v, %v", got, err)
	}
	s := newSession(t, ctx, cli, 10*time.Second)
	if err := coord.PutHistory(ctx, s, "n1", list); err != nil {
		t.Fatal(err)
	}
	got, err := coord.GetHistory(ctx, cli, "n1")
	if err != nil || len(got) != coord.MaxHistory || got[len(got)-1].ID != list[len(list)-1].ID {
		t.Fatalf("read back %d messages: %v", len(got), err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := coord.GetHistory(ctx, cli, "n1"); err != nil || len(got) != 0 {
		t.Fatalf("history outlived the session: %d messages, %v", len(got), err)
	}
}

func TestDefaultIDIsStablePerHostAndDataDir(t *testing.T) {
	def := "/home/u/.local/share/kato/etcd"
	for _, tc := range []struct{ host, dir, want string }{
		{"vm", def, "vm"},
		{"vm", "", "vm"},
		{"my.host", def + "/", "my-host"},
		{"vm", "/data/a", "vm-"},
	} {
		got := coord.DefaultID(tc.host, tc.dir, def)
		if !strings.HasPrefix(got, tc.want) || (tc.want == "vm-" && len(got) != len("vm-")+8) || coord.CheckID(got) != nil {
			t.Errorf("DefaultID(%q, %q) = %q, want %q...", tc.host, tc.dir, got, tc.want)
		}
		if again := coord.DefaultID(tc.host, tc.dir, def); again != got {
			t.Errorf("DefaultID not stable: %q then %q", got, again)
		}
	}
	if coord.DefaultID("vm", "/data/a", def) == coord.DefaultID("vm", "/data/b", def) {
		t.Error("two data dirs on one host got the same id")
	}
}
