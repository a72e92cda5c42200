package processor

// This file is the processor's answers (predictions, a model, cognition data,
// an observe result) and their JSON form.

import (
	"strconv"
)

// Prediction is one entry of the prediction list (PROCESSOR.md 7.8).
// Predictions handed out by the processor are shared and read-only.
type Prediction struct {
	Type      string // always "prototypical"
	Name      string // "MODEL|<hash>" (D10: always prefixed)
	Frequency int64
	Emotives  Emotives // average of the model's emotive window
	Matches   []string
	Past      [][]string
	Present   [][]string
	Missing   []string
	Extras    []string
	Future    [][]string

	Potential        float64 // rounded to 12 decimals
	Evidence         float64
	Similarity       float64
	Fragmentation    float64
	SNR              float64
	Entropy          float64 // rounded
	Hamiltonian      float64 // rounded
	GrandHamiltonian float64 // rounded
	Confluence       float64 // rounded
	Confidence       float64
	ItfdfSimilarity  float64 // rounded
}

// MarshalJSON writes the 21 fields in KATO's order with Python-style floats.
func (p Prediction) MarshalJSON() ([]byte, error) { return p.appendJSON(make([]byte, 0, 512)) }

func (p Prediction) appendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, p.Type)
	dst = append(dst, `,"name":`...)
	dst = appendJSONString(dst, p.Name)
	dst = append(dst, `,"frequency":`...)
	dst = strconv.AppendInt(dst, p.Frequency, 10)
	dst = append(dst, `,"emotives":`...)
	dst, err := p.Emotives.appendJSON(dst)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"matches":`...)
	dst = appendStrings(dst, p.Matches)
	dst = append(dst, `,"past":`...)
	dst = appendEvents(dst, p.Past)
	dst = append(dst, `,"present":`...)
	dst = appendEvents(dst, p.Present)
	dst = append(dst, `,"missing":`...)
	dst = appendStrings(dst, p.Missing)
	dst = append(dst, `,"extras":`...)
	dst = appendStrings(dst, p.Extras)
	for _, f := range []struct {
		key string
		val float64
	}{
		{"potential", p.Potential}, {"evidence", p.Evidence}, {"similarity", p.Similarity},
		{"fragmentation", p.Fragmentation}, {"snr", p.SNR}, {"entropy", p.Entropy},
		{"hamiltonian", p.Hamiltonian}, {"grand_hamiltonian", p.GrandHamiltonian},
		{"confluence", p.Confluence},
	} {
		if dst, err = appendFloatField(dst, f.key, f.val); err != nil {
			return nil, err
		}
	}
	dst = append(dst, `,"future":`...)
	dst = appendEvents(dst, p.Future)
	if dst, err = appendFloatField(dst, "confidence", p.Confidence); err != nil {
		return nil, err
	}
	if dst, err = appendFloatField(dst, "itfdf_similarity", p.ItfdfSimilarity); err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// Predictions is a prediction list; it marshals as a JSON list (never null).
type Predictions []Prediction

// MarshalJSON implements json.Marshaler.
func (ps Predictions) MarshalJSON() ([]byte, error) {
	return appendList(make([]byte, 0, 512*len(ps)+2), ps, func(dst []byte, p Prediction) ([]byte, error) { return p.appendJSON(dst) })
}

// Model is the API view of a model (GET model/{name}).
type Model struct {
	Name      string // bare hash
	Sequence  [][]string
	Frequency int64
	Emotives  []Emotives // the window, possibly empty (D8)
}

// MarshalJSON writes {"name","sequence","frequency","emotives"}.
func (m Model) MarshalJSON() ([]byte, error) {
	dst := []byte(`{"name":`)
	dst = appendJSONString(dst, m.Name)
	dst = append(dst, `,"sequence":`...)
	dst = appendEvents(dst, m.Sequence)
	dst = append(dst, `,"frequency":`...)
	dst = strconv.AppendInt(dst, m.Frequency, 10)
	dst = append(dst, `,"emotives":`...)
	dst, err := appendEmotiveList(dst, m.Emotives)
	if err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// Cognition is the cognition data (3.5, D10).
type Cognition struct {
	Predictions   Predictions
	Emotives      Emotives // current_emotives (stale after a learn, D11)
	Symbols       []string // the event of the last observe call
	WorkingMemory [][]string
}

// MarshalJSON writes {"predictions","emotives","symbols","command","metadata",
// "path","strings","vectors","working_memory"}.
func (c Cognition) MarshalJSON() ([]byte, error) {
	preds, err := c.Predictions.MarshalJSON()
	if err != nil {
		return nil, err
	}
	dst := append([]byte(`{"predictions":`), preds...)
	dst = append(dst, `,"emotives":`...)
	if dst, err = c.Emotives.appendJSON(dst); err != nil {
		return nil, err
	}
	dst = append(dst, `,"symbols":`...)
	dst = appendStrings(dst, c.Symbols)
	dst = append(dst, `,"command":"","metadata":{},"path":[],"strings":[],"vectors":[],"working_memory":`...)
	dst = appendEvents(dst, c.WorkingMemory)
	return append(dst, '}'), nil
}

// ObserveResult is what observe answers (3.2 step 11).
type ObserveResult struct {
	// UniqueID echoes the observation's unique_id.
	UniqueID string
	// AutoLearnedModel is "MODEL|<hash>" when this call auto-learned a model,
	// "" otherwise (JSON null).
	AutoLearnedModel string
}

// MarshalJSON writes the message of the observe response (8.2):
// {"status":"observed","auto_learned_model":"MODEL|…" or null}.
func (r ObserveResult) MarshalJSON() ([]byte, error) {
	dst := []byte(`{"status":"observed","auto_learned_model":`)
	if r.AutoLearnedModel == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONString(dst, r.AutoLearnedModel)
	}
	return append(dst, '}'), nil
}
