package kb

// This file is the model's stored layout: its keys, the head record, and the
// framing of snapshot chunks and log entries (version, compression).

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kato-coord/kato/node/processor"
)

// FormatVersion is the version of the stored model this build writes and
// reads. The head record, every snapshot chunk and every log entry carries
// it; a node meets a version it does not know with ErrUnknownFormat and never
// reads past it.
const FormatVersion = 1

// Keys of a model, relative to models/<model>/.
//
//	head                 the model's head record (Head): the current snapshot and where its log starts
//	meta                 who wrote the model last, under which fence; rewritten by every transaction
//	log/<seq:016x>       the changes made since the snapshot, one entry per transaction
//	snap/<id>/<n:08d>    the chunks of snapshot <id>; a snapshot is invisible until head names it
//	patterns/<hash>      the layout before FormatVersion 1 (one key per pattern), read until the first checkpoint
//	vectors/<hash>       the same, for vectors
const (
	HeadKey = "head"
	MetaKey = "meta"

	logDir          = "log/"
	snapDir         = "snap/"
	legacyPatterns  = "patterns/"
	legacyVectorDir = "vectors/"
)

func logKey(seq uint64) string { return logDir + fmt.Sprintf("%016x", seq) }

// parseLogKey returns the sequence number of a log key.
func parseLogKey(key string) (uint64, bool) {
	hex, ok := strings.CutPrefix(key, logDir)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil
}

func chunkPrefix(snapshot string) string { return snapDir + snapshot + "/" }

func chunkKey(snapshot string, n int) string { return chunkPrefix(snapshot) + fmt.Sprintf("%08d", n) }

// Head is the model's head record: which snapshot holds the model and where
// its log starts. A checkpoint or an import replaces it in one fenced
// transaction.
type Head struct {
	V int `json:"v"`
	// Snapshot is the id of the snapshot; Chunks how many chunks it has.
	Snapshot string `json:"snapshot"`
	Chunks   int    `json:"chunks"`
	// LogFrom is the first log sequence number not in the snapshot.
	LogFrom uint64 `json:"log_from"`
	// Base changes only when the model is replaced as a whole (an import): a
	// follower that sees a new base loads the model again. A checkpoint
	// keeps it.
	Base string `json:"base,omitempty"`
	// Sorted says the snapshot holds its patterns, then its vectors, each in
	// ascending learn sequence (a checkpoint writes it so; an import in the
	// order of its file).
	Sorted   bool  `json:"sorted"`
	Patterns int64 `json:"patterns"`
	Vectors  int64 `json:"vectors"`
	// MaxPatternSeq and MaxVectorSeq are the highest learn sequence numbers
	// in the snapshot: a record of the log above them is new, one below a
	// re-learn (for counting without reading the snapshot).
	MaxPatternSeq uint64 `json:"max_pattern_seq,omitempty"`
	MaxVectorSeq  uint64 `json:"max_vector_seq,omitempty"`
	// Bytes is the stored (compressed) size of the snapshot's chunks.
	Bytes     int64     `json:"bytes"`
	WrittenBy string    `json:"written_by,omitempty"`
	WrittenAt time.Time `json:"written_at"`
}

func (h Head) encode() []byte {
	h.V = FormatVersion
	b, _ := json.Marshal(h)
	return b
}

// decodeHead reads a head record, refusing a version it does not know before
// it looks at any other field.
func decodeHead(model string, b []byte) (Head, error) {
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return Head{}, fmt.Errorf("%w: model %s: head record: %v", ErrCorrupt, model, err)
	}
	if v.V != FormatVersion {
		return Head{}, unknownFormat(model, "head record", v.V)
	}
	var h Head
	if err := json.Unmarshal(b, &h); err != nil {
		return Head{}, fmt.Errorf("%w: model %s: head record: %v", ErrCorrupt, model, err)
	}
	if h.Snapshot == "" || h.Chunks < 0 || strings.Contains(h.Snapshot, "/") {
		return Head{}, fmt.Errorf("%w: model %s: head record names no valid snapshot", ErrCorrupt, model)
	}
	return h, nil
}

func unknownFormat(model, what string, v int) error {
	return fmt.Errorf("%w: model %s: %s has format version %d, this build reads %d: upgrade this node to the version that wrote the model",
		ErrUnknownFormat, model, what, v, FormatVersion)
}

// Framing. A snapshot chunk is [version, codec] + body; a log entry is
// [version, codec, flags] + uvarint(first sequence number of its group) +
// body part. Bodies are records (codec.go), compressed as codec says.
const (
	codecRaw  = 0
	codecZstd = 1

	flagLast = 1 // the last entry of its group: the group is complete

	// maxPartBytes bounds the body of one chunk or log entry, so that with
	// its key and the transaction around it one always fits one etcd request
	// (1.5 MiB by default).
	maxPartBytes = 1 << 20
	// compressFrom is the body size from which compression is tried.
	compressFrom = 512
	// maxBodyBytes bounds what one decompressed body may hold: a bad or
	// hostile entry cannot make a reader allocate more.
	maxBodyBytes = 64 << 20
)

// zstd is safe for concurrent EncodeAll/DecodeAll: one encoder and one
// decoder serve the process, built on first use.
var (
	encoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err) // only for bad options
		}
		return e
	})
	decoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxBodyBytes),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err)
		}
		return d
	})
)

// compress returns body compressed when that saves space, and its codec.
func compress(body []byte) ([]byte, byte) {
	if len(body) < compressFrom {
		return body, codecRaw
	}
	z := encoder().EncodeAll(body, make([]byte, 0, len(body)/2))
	if len(z) >= len(body) {
		return body, codecRaw
	}
	return z, codecZstd
}

func decompress(model string, codec byte, b []byte) ([]byte, error) {
	switch codec {
	case codecRaw:
		return b, nil
	case codecZstd:
		// EncodeAll puts the body's size in the frame header: a frame
		// without it, or larger than a body may be, is refused before
		// anything is decoded, and the body is decoded into a buffer of
		// that size and no more (without a size, the decoder would grow its
		// output up to maxBodyBytes before it fails).
		var h zstd.Header
		if err := h.Decode(b); err != nil || !h.HasFCS || h.FrameContentSize > maxBodyBytes {
			return nil, fmt.Errorf("%w: model %s: a compressed body must say its size, at most %d bytes", ErrCorrupt, model, maxBodyBytes)
		}
		out, err := decoder().DecodeAll(b, make([]byte, 0, h.FrameContentSize))
		if err != nil {
			return nil, fmt.Errorf("%w: model %s: %v", ErrCorrupt, model, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: model %s: unknown compression %d", ErrCorrupt, model, codec)
}

func frameChunk(body []byte) []byte {
	z, codec := compress(body)
	return append([]byte{FormatVersion, codec}, z...)
}

// openChunk returns the records of a snapshot chunk.
func openChunk(model, key string, v []byte) ([]byte, error) {
	if len(v) < 2 {
		return nil, fmt.Errorf("%w: model %s: %s is %d bytes", ErrCorrupt, model, key, len(v))
	}
	if v[0] != FormatVersion {
		return nil, unknownFormat(model, key, int(v[0]))
	}
	return decompress(model, v[1], v[2:])
}

// logEntry is one decoded log entry (a part of a group).
type logEntry struct {
	seq   uint64
	first uint64 // the group's first sequence number
	last  bool
	codec byte
	part  []byte // still compressed as codec says
}

func frameLogEntry(codec byte, first uint64, last bool, part []byte) []byte {
	var flags byte
	if last {
		flags = flagLast
	}
	b := make([]byte, 0, 3+binary.MaxVarintLen64+len(part))
	b = append(b, FormatVersion, codec, flags)
	b = binary.AppendUvarint(b, first)
	return append(b, part...)
}

func openLogEntry(model, key string, v []byte) (logEntry, error) {
	seq, ok := parseLogKey(key)
	if !ok {
		return logEntry{}, fmt.Errorf("%w: model %s: %s is not a log key", ErrCorrupt, model, key)
	}
	if len(v) < 4 {
		return logEntry{}, fmt.Errorf("%w: model %s: %s is %d bytes", ErrCorrupt, model, key, len(v))
	}
	if v[0] != FormatVersion {
		return logEntry{}, unknownFormat(model, key, int(v[0]))
	}
	first, n := binary.Uvarint(v[3:])
	if n <= 0 || first > seq || v[2]&^flagLast != 0 {
		return logEntry{}, fmt.Errorf("%w: model %s: %s has a bad header", ErrCorrupt, model, key)
	}
	return logEntry{seq: seq, first: first, last: v[2]&flagLast != 0, codec: v[1], part: v[3+n:]}, nil
}

// groups reassembles log entries, given in sequence order, into whole
// groups. A group whose last entry never came (its writer failed between
// them) is dropped when the next group starts: it was never visible.
type groups struct {
	model string
	next  uint64 // the sequence number expected next
	open  bool   // entries of an unfinished group are held
	first uint64
	codec byte
	body  []byte
	// dropped counts unfinished groups skipped.
	dropped int
}

// add takes the next entry; it returns the body of a group it completes.
func (g *groups) add(e logEntry) ([]byte, error) {
	if e.seq != g.next {
		return nil, fmt.Errorf("%w: model %s: log entry %d where %d was expected", errLogGap, g.model, e.seq, g.next)
	}
	g.next = e.seq + 1
	if e.first == e.seq { // a new group starts
		if g.open {
			g.dropped++
		}
		g.open, g.first, g.codec, g.body = true, e.seq, e.codec, g.body[:0]
	} else if !g.open || e.first != g.first || e.codec != g.codec {
		return nil, nil // a part of a group already dropped
	}
	if len(g.body)+len(e.part) > maxBodyBytes {
		return nil, fmt.Errorf("%w: model %s: log group %d is larger than %d bytes", ErrCorrupt, g.model, g.first, maxBodyBytes)
	}
	g.body = append(g.body, e.part...)
	if !e.last {
		return nil, nil
	}
	g.open = false
	body, err := decompress(g.model, g.codec, g.body)
	if err != nil {
		return nil, err
	}
	if g.codec == codecRaw {
		body = append([]byte(nil), body...) // g.body is reused
	}
	return body, nil
}

// changes takes the next entry and returns the changes of the group it
// completes (nil while a group is unfinished).
func (g *groups) changes(e logEntry) (processor.Changes, error) {
	body, err := g.add(e)
	if err != nil || body == nil {
		return nil, err
	}
	var chs processor.Changes
	if err := decodeChanges(body, true, func(ch processor.Change) error { chs = append(chs, ch); return nil }); err != nil {
		return nil, fmt.Errorf("log entry %d: %w", e.seq, err)
	}
	return chs, nil
}

// errLogGap is a log that skips a sequence number: a follower missed a
// change (the model was removed or replaced under it) and loads again.
var errLogGap = errors.New("kb: log sequence gap")
