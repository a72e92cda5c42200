package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// The holder is killed (-9) at every step of a checkpoint: after it froze
// the model, after its first snapshot chunk (of two or more), with every
// chunk written but the head not switched, and after the switch. The next
// holder loads the model with every learn that was acknowledged, and etcd
// holds what the step says (chunks without a head before the switch, a
// head after it).
func TestCheckpointCrashAtEveryStep(t *testing.T) {
	for _, step := range []string{node.StepFrozen, node.StepChunk, node.StepBeforeSwitch, node.StepSwitched} {
		t.Run(step, func(t *testing.T) {
			c := newCluster(t)
			common := []string{"--model", "m", "--port", "0", "--ttl", "3s", "--checkpoint-bytes", "1000000000"}
			a := c.node(append([]string{"--id", "a", "--checkpoint-entries", "20", "--test-crash-at", step}, common...)...)
			client := api{t, c.waitStatus("a", coord.StatusRunning).APIURL}

			// Learn until the node dies in its checkpoint: each pattern
			// holds a 40 KiB symbol, so the snapshot needs several chunks.
			var acked []string
			deadline := time.Now().Add(2 * time.Minute)
		learn:
			for i := 0; ; i++ {
				select {
				case <-a.done:
					break learn
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the node never reached step %s:\n%s", step, a.out.String())
				}
				if r := client.do("POST", "/m/observe", obs(processortest.RandomSymbol(40<<10), fmt.Sprint("n", i))); r.code != 200 {
					continue
				}
				r := client.do("POST", "/m/learn", "")
				if r.code != 200 {
					continue
				}
				var name string
				if _, err := fmt.Sscanf(string(r.body[strings.Index(string(r.body), "MODEL|"):]), "MODEL|%40s", &name); err != nil {
					t.Fatalf("learn answered %s", r.body)
				}
				acked = append(acked, name)
			}
			t.Logf("%d learns acknowledged before the kill at %s", len(acked), step)

			sum, err := kb.Summarize(c.ctx, c.cli.KV, "m", nil)
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := c.cli.Get(c.ctx, coord.ModelPrefix("m")+"snap/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			switch step {
			case node.StepSwitched:
				if sum.Head == nil || sum.Head.Chunks < 2 {
					t.Fatalf("after the switch the head is %+v, want a snapshot of 2 or more chunks", sum.Head)
				}
			case node.StepFrozen:
				if sum.Head != nil || chunks.Count != 0 {
					t.Fatalf("killed before any chunk, etcd holds head %+v and %d chunks", sum.Head, chunks.Count)
				}
			default:
				if sum.Head != nil || chunks.Count == 0 {
					t.Fatalf("killed between chunks, etcd holds head %+v and %d chunks", sum.Head, chunks.Count)
				}
			}

			c.node(append([]string{"--id", "b"}, common...)...)
			b := api{t, c.waitStatus("b", coord.StatusRunning).APIURL}
			for _, name := range acked {
				if r := b.do("GET", "/m/model/"+name, ""); r.code != 200 {
					t.Fatalf("acknowledged %s lost after a kill at %s: %d %s", name, step, r.code, r.body)
				}
			}
		})
	}
}
