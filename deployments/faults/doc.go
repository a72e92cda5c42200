// Package faults tests KATO the way Jepsen tests databases: many operations
// under injected faults, and a checker over the whole recorded history.
//
// The harness (harness_test.go, netns_test.go, proc_test.go, build_test.go)
// runs three real etcd members and several real katonode processes, each on a
// test host of its own: a network namespace with its own address, joined to
// the others by a bridge in a namespace of its own. It can kill -9, pause
// (SIGSTOP/SIGCONT) and restart any process and cut any host off from any
// other, one way or both (nftables rules at the receiving host's input), then
// heal. Everything it starts is stopped and removed by Cluster.Close;
// namespaces left by a run that crashed are removed by the next run.
//
// The workloads (workload_test.go) learn through every node, send messages
// between nodes and write to etcd directly, while the scheduler (run_test.go)
// injects seeded random faults one after the other. A watch records every
// change of the /kato/ keys from revision 1 (history_test.go). Check
// (check_test.go) then verifies DESIGN.md §6 over the history, the operations
// and the faults: fenced model writes only under the lock, no two running
// claims in one lock epoch, no acknowledged learn, message or etcd write lost,
// stale registry records gone within TTL + 1 s, healthy ones never gone,
// messages delivered before their TTL, etcd writable again within the bound
// after losing a member, and the cluster settling after every fault.
//
// It needs root, iproute2 and nftables; the tests skip without them. It is
// test code only: every file but this one is a _test.go file, so the package
// exports nothing, no product package can import it, and it builds binaries
// (go build of cmd/katonode, deployments/docker/build-images.sh for etcd)
// only when its tests run.
package faults
