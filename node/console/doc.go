// Package console is the node's web console at /ui/: a page that shows the
// cluster (instances, models and their locks, KATO 3 sessions, waiting
// messages, etcd) and changes as the cluster does, with a few admin actions
// (stop an instance, break a model lock, send a message, remove an inbox
// nobody reads).
//
// Cost. The page holds one Server-Sent Events stream. The console feeds every
// stream from one in-memory state: instances and lock holders come from the
// node's Directory, which the node keeps current with etcd watches anyway;
// what no watch gives (lease TTLs left, lock queues, model sizes, sessions,
// inboxes, etcd members) is read by one poller per node, and only while at
// least one page is open. A viewer costs a goroutine and the bytes of the
// sections that changed, never an etcd request; a slow viewer skips states, it
// never queues them.
//
// Safety. Assets are embedded (no CDN, no build step). The page builds its DOM
// with textContent only, and is served with a Content-Security-Policy that
// allows no inline script, so data from etcd (names, hosts) is shown and never
// run. The /ui/api/ routes sit behind the node's API token, checked by the
// node's API handler; actions also need a JSON content type, which a foreign
// page cannot send without a CORS preflight.
package console
