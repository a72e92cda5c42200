package kb

// This file lends the package's external tests the stored layout's
// internals, to write entries and chunks by hand.

import "github.com/kato-coord/kato/node/processor"

// LogKey is the key of log entry seq, relative to the model's prefix.
func LogKey(seq uint64) string { return logKey(seq) }

// ChunkKey is the key of chunk n of snapshot id.
func ChunkKey(id string, n int) string { return chunkKey(id, n) }

// FrameLogEntry frames an uncompressed body part as a log entry.
func FrameLogEntry(first uint64, last bool, part []byte) []byte {
	return frameLogEntry(codecRaw, first, last, part)
}

// EncodeChanges returns the record body of changes.
func EncodeChanges(chs ...processor.Change) ([]byte, error) {
	var b []byte
	for _, ch := range chs {
		var err error
		if b, err = appendChange(b, ch); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// MaxPartBytes bounds one log entry's body.
const MaxPartBytes = maxPartBytes
