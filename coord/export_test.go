package coord

import "time"

// WithClock makes Session.Err read now instead of time.Now, so that a test
// can step past the lease deadline while the keep-alive goroutine sleeps.
func WithClock(now func() time.Time) SessionOption {
	return func(o *sessionOptions) { o.now = now }
}
