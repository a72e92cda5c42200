package coord_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
)

// ListInboxes summarises what waits per inbox without reading bodies;
// RemoveInbox deletes an inbox nobody is registered for and refuses one whose
// instance is registered.
func TestInboxesListAndRemove(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	s := mbSession(t, ctx, cli)
	mb := coord.NewMailbox(s, "sender")
	registerRaw(t, ctx, cli, s, "live", "live", "live")
	before := time.Now().Add(-time.Second)
	for _, to := range []string{"gone", "gone", "gone", "live"} {
		if _, err := mb.Send(ctx, to, coord.Message{Body: "<b>hi</b>"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	list, more, err := coord.ListInboxes(ctx, cli.KV, 100)
	if err != nil || more {
		t.Fatalf("ListInboxes: %v (more %v)", err, more)
	}
	if len(list) != 2 || list[0].ID != "gone" || list[0].Pending != 3 || list[1].ID != "live" || list[1].Pending != 1 {
		t.Fatalf("ListInboxes = %+v", list)
	}
	g := list[0]
	if g.Oldest.Before(before) || g.Newest.Before(g.Oldest) || time.Since(g.Newest) > time.Minute || g.OldestLease == 0 {
		t.Fatalf("gone inbox summary: %+v", g)
	}
	if _, more, _ := coord.ListInboxes(ctx, cli.KV, 2); !more {
		t.Fatal("ListInboxes with a limit below the key count did not say more")
	}

	if _, err := coord.RemoveInbox(ctx, cli.KV, "live"); !errors.Is(err, coord.ErrInboxInUse) {
		t.Fatalf("RemoveInbox of a registered instance: %v, want ErrInboxInUse", err)
	}
	if n := inboxCount(t, ctx, cli, "live"); n != 1 {
		t.Fatalf("refused removal deleted messages: %d left", n)
	}
	n, err := coord.RemoveInbox(ctx, cli.KV, "gone")
	if err != nil || n != 3 {
		t.Fatalf("RemoveInbox(gone) = %d, %v; want 3 deleted", n, err)
	}
	if left := inboxCount(t, ctx, cli, "gone"); left != 0 {
		t.Fatalf("%d messages left in the removed inbox", left)
	}
	if _, err := coord.RemoveInbox(ctx, cli.KV, "no/such"); !errors.Is(err, coord.ErrInvalidID) {
		t.Fatalf("RemoveInbox of a bad id: %v", err)
	}
}
