package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
	"github.com/kato-coord/kato/coord"
)

// A message to a model goes to the node holding it; once consumed it stays
// visible in that node's history: in GET /{id}/messages on any node and in
// katoctl msg ls.
func TestMessagesToAModelReachItsHolderAndStayVisible(t *testing.T) {
	c := newCluster(t)
	ctl := clitest.BuildKatoctl(t)
	c.node("--id", "a", "--model", "m", "--port", "0")
	ra := c.waitStatus("a", coord.StatusRunning)
	c.node("--id", "b", "--port", "0")
	rb := c.waitStatus("b", coord.StatusRunning)

	var sent struct {
		Message coord.Sent `json:"message"`
	}
	r := (api{t, rb.APIURL}).do("POST", "/m/messages", `{"kind":"data_ready","body":"batch 7"}`)
	if r.code != 200 || json.Unmarshal(r.body, &sent) != nil || sent.Message.To != "a" {
		t.Fatalf("POST /m/messages: %d %s; want it sent to a, the holder of m", r.code, r.body)
	}
	type pending struct {
		ID       string                  `json:"id"`
		Message  []coord.Message         `json:"message"`
		Received []coord.ReceivedMessage `json:"received"`
	}
	for _, base := range []string{ra.APIURL, rb.APIURL} { // a from memory, b from etcd
		waitFor(t, c.ctx, func() error {
			r := (api{t, base}).do("GET", "/a/messages", "")
			var p pending
			if r.code != 200 || json.Unmarshal(r.body, &p) != nil {
				return fmt.Errorf("%d %s", r.code, r.body)
			}
			if len(p.Message) != 0 || len(p.Received) != 1 || p.Received[0].ID != sent.Message.ID || p.Received[0].Body != "batch 7" {
				return fmt.Errorf("GET %s/a/messages: %s", base, r.body)
			}
			return nil
		})
	}
	out, err := exec.CommandContext(c.ctx, ctl, "msg", "ls", "a", "--endpoints", strings.Join(c.etc.Endpoints(), ",")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), sent.Message.ID) || !strings.Contains(string(out), "received") || !strings.Contains(string(out), "batch 7") {
		t.Fatalf("katoctl msg ls a: %v\n%s", err, out)
	}
}
