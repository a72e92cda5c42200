package coord

// StreamOpens is how many keep-alive streams k has opened, so that a test
// can tell sessions share them.
func (k *KeepAlives) StreamOpens() int64 { return k.opens.Load() }
