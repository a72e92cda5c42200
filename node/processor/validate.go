package processor

// This file checks single stored records, as a load does, for importers
// that cannot build the whole model.

// Validate checks a pattern record on its own as a load does: non-empty
// UTF-8 events, its length, a positive frequency, and a name that is the
// hash of its events (an empty name is taken as that hash).
func (r PatternRecord) Validate() error {
	if r.Name == "" {
		r.Name = ModelName(r.Events)
	}
	_, err := r.check()
	return err
}
