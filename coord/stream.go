// A namespaced KV whose GetStream works (prefixedKV), which namespace's
// refuses.

package coord

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
)

// prefixedKV is a KV confined to a prefix (namespace.NewKV) whose GetStream
// works too: namespace's refuses it, so it streams from the unconfined KV
// with the prefix added, and takes the prefix off the keys it returns.
type prefixedKV struct {
	clientv3.KV
	raw    clientv3.KV
	prefix string
}

func newPrefixedKV(raw clientv3.KV, prefix string) clientv3.KV {
	return prefixedKV{KV: namespace.NewKV(raw, prefix), raw: raw, prefix: prefix}
}

// GetStream streams key (or a range of keys) relative to the prefix, like
// clientv3.KV.GetStream. Read the channel until it closes, or cancel ctx:
// the stream's goroutines end either way.
func (kv prefixedKV) GetStream(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	end := clientv3.OpGet(key, opts...).RangeBytes()
	switch {
	case len(end) == 0:
	case len(end) == 1 && end[0] == 0: // from key: up to the end of the prefix
		opts = append(opts, clientv3.WithRange(clientv3.GetPrefixRangeEnd(kv.prefix)))
	default:
		opts = append(opts, clientv3.WithRange(kv.prefix+string(end)))
	}
	in, err := kv.raw.GetStream(ctx, kv.prefix+key, opts...)
	if err != nil {
		return nil, err
	}
	out := make(chan clientv3.RangeStreamResponse, 1)
	go func() {
		defer close(out)
		for r := range in {
			if r.Err() == nil {
				for _, item := range r.Kvs {
					item.Key = item.Key[len(kv.prefix):]
				}
			}
			select {
			case out <- r:
			case <-ctx.Done():
				for range in { // let the client's goroutine end
				}
				return
			}
		}
	}()
	return out, nil
}
