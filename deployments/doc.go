// Package deployments holds no code: its tests check the deployment files
// beside it against the real tools and types they are written for.
//
//   - docker-compose.yml (at the repository root) is brought up on the Docker
//     engine with images built locally by docker/build-images.sh: every
//     instance registers, one node of the pair sharing a model runs while the
//     other waits, and the standby takes over when the running one is stopped.
//     It skips where no Docker engine answers.
//   - kubernetes/*.yaml decode strictly into the Kubernetes API types.
//   - kubernetes/etcd-rbac.sh makes a user that can write the KATO prefix of a
//     real etcd with auth on, and nothing else.
//   - prometheus/ passes `promtool check config`, the Grafana dashboard's
//     queries parse and name only metrics the node exports, and the systemd
//     unit passes `systemd-analyze verify`.
//
// The fault-injection suite, which deploys real etcd members and katonodes
// into network namespaces and breaks them, is the package faults beside it.
package deployments
