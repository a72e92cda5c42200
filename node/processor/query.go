package processor

// This file encodes the state of one prediction against the symbol table
// (query), with each symbol's count and positions.

// query is the state of one prediction, encoded against the symbol table:
// known symbols keep their id, unknown ones get distinct negative ids. Each
// distinct state symbol has a slot (first-occurrence order) with its count
// and its positions in the state (difflib's b2j).
type query struct {
	names   []string // the flattened state
	state   []int32
	slotIDs []int32
	slotCnt []int32
	posOff  []int32 // positions of slot s: posIdx[posOff[s]:posOff[s+1]]
	posIdx  []int32

	slotOfID  []int32 // by known id, valid when stampOfID matches stamp
	stampOfID []uint32
	stamp     uint32
	unknown   map[string]int32
}

// build encodes the flattened STM.
func (q *query) build(t *symtab, stm [][]string) {
	q.names = q.names[:0]
	for _, ev := range stm {
		q.names = append(q.names, ev...)
	}
	if n := len(t.names); len(q.slotOfID) < n {
		q.slotOfID = append(q.slotOfID, make([]int32, n-len(q.slotOfID))...)
		q.stampOfID = append(q.stampOfID, make([]uint32, n-len(q.stampOfID))...)
	}
	q.stamp++
	if q.stamp == 0 { // wrapped: forget every old stamp
		clear(q.stampOfID)
		q.stamp = 1
	}
	if q.unknown == nil {
		q.unknown = make(map[string]int32)
	}
	clear(q.unknown)
	q.state, q.slotIDs, q.slotCnt = q.state[:0], q.slotIDs[:0], q.slotCnt[:0]
	for _, s := range q.names {
		var slot int32
		id, known := t.lookup(s)
		switch {
		case known && q.stampOfID[id] == q.stamp:
			slot = q.slotOfID[id]
		case known:
			slot = q.newSlot(id)
			q.stampOfID[id], q.slotOfID[id] = q.stamp, slot
		default:
			var seen bool
			if slot, seen = q.unknown[s]; !seen {
				slot = q.newSlot(0)
				q.slotIDs[slot] = -1 - slot
				q.unknown[s] = slot
			}
			id = -1 - slot
		}
		q.slotCnt[slot]++
		q.state = append(q.state, id)
	}
	n := len(q.slotIDs)
	q.posOff = append(q.posOff[:0], make([]int32, n+1)...)
	for s := 0; s < n; s++ {
		q.posOff[s+1] = q.posOff[s] + q.slotCnt[s]
	}
	q.posIdx = append(q.posIdx[:0], make([]int32, len(q.state))...)
	fill := append([]int32(nil), q.posOff[:n]...)
	for j, id := range q.state {
		s := q.slotOf(id)
		q.posIdx[fill[s]] = int32(j)
		fill[s]++
	}
}

func (q *query) newSlot(id int32) int32 {
	q.slotIDs = append(q.slotIDs, id)
	q.slotCnt = append(q.slotCnt, 0)
	return int32(len(q.slotIDs) - 1)
}

// slotOf returns the slot of a symbol id, or -1 when it is not in the state.
func (q *query) slotOf(id int32) int32 {
	if id < 0 {
		return -1 - id
	}
	if int(id) >= len(q.stampOfID) || q.stampOfID[id] != q.stamp {
		return -1
	}
	return q.slotOfID[id]
}

// positions returns the state positions of a slot, ascending.
func (q *query) positions(slot int32) []int32 {
	return q.posIdx[q.posOff[slot]:q.posOff[slot+1]]
}
