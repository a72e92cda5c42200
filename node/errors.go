package node

// This file holds the package's error values, in one place: the exported ones
// the API maps to HTTP answers, and the unexported ones that end an epoch.

import "errors"

// ErrNotServing is returned for processor calls while the node does not hold
// its model lock (standby, lease lost, stopping): the API answers 503.
var ErrNotServing = errors.New("node: not serving this model now (no model lock)")

// ErrWriteFailed is returned when a model change could not be made durable
// because the node lost its lock; the API answers 503.
var ErrWriteFailed = errors.New("node: model change not stored (model lock lost)")

// ErrNotStored is returned when a model change was not made durable for a
// reason of that request (etcd refused it, or a change before it failed):
// the node keeps its lock and reloads the model from etcd before it takes
// writes again; the API answers 503.
var ErrNotStored = errors.New("node: model change not stored; the model reloads from etcd")

// ErrOutcomeUnknown is returned when a model change was sent to etcd but its
// result is not known (the node stopped serving while it was in flight, a
// timeout, a lost connection): etcd may hold it or not. The API answers 503.
var ErrOutcomeUnknown = errors.New("node: model change sent; whether it was stored is unknown")

// errStop ends a session epoch when a stop was asked for (signal or
// control message); Run then stops gracefully and returns nil.
var errStop = errors.New("node: stop requested")

// errLockTimeout ends a node that did not get its model lock within
// --lock-timeout.
var errLockTimeout = errors.New("node: lock timeout")
