package processor

// This file is the genes: Config, its defaults and checks, the table of genes
// by name, and decoding and applying gene changes.

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Config holds the genes of a processor (PROCESSOR.md 2). Start from
// DefaultConfig; New and Load validate it. Every gene takes effect at once
// when changed through ChangeGenes (D2).
type Config struct {
	// MaxPredictions is how many predictions to keep (default 100, ≥ 0).
	MaxPredictions int
	// RecallThreshold is the lowest similarity a model needs to become a
	// prediction (default 0.1, in [0, 1]).
	RecallThreshold float64
	// MaxSequenceLength makes observe learn when the STM holds that many
	// events (default 0 = never, ≥ 0).
	MaxSequenceLength int
	// Persistence is the length of a model's emotive window (default 5, ≥ 0).
	Persistence int
	// Sort sorts the strings of each event, and the vector symbols
	// separately (default true).
	Sort bool
	// SearchDepth is stored only (it drove the DVC classifier; default 10, ≥ 0).
	SearchDepth int
	// Smoothness is stored only (default 3, ≥ 0).
	Smoothness int
	// Quiescence is stored only (default 3, ≥ 0).
	Quiescence int
	// Classifier must be "CVC" (D12).
	Classifier string
	// IndexerType must be "VI" (D12).
	IndexerType string
	// AutoActMethod is stored only (default "none").
	AutoActMethod string
	// AutoActThreshold is stored only (default 0.8, finite).
	AutoActThreshold float64
	// AlwaysUpdateFrequencies is stored only (default false).
	AlwaysUpdateFrequencies bool
	// ProcessPredictions is stored only (default true): predictions are
	// always computed.
	ProcessPredictions bool
}

// DefaultConfig returns the genes of kato-manager.sh.
func DefaultConfig() Config {
	return Config{
		MaxPredictions:     100,
		RecallThreshold:    0.1,
		Persistence:        5,
		Sort:               true,
		SearchDepth:        10,
		Smoothness:         3,
		Quiescence:         3,
		Classifier:         "CVC",
		IndexerType:        "VI",
		AutoActMethod:      "none",
		AutoActThreshold:   0.8,
		ProcessPredictions: true,
	}
}

// Validate checks every gene's range.
func (c Config) Validate() error {
	for _, g := range geneTable {
		if g.set == nil {
			continue
		}
		if err := g.set(&c, jvalueOf(g.get(&c, "", ""))); err != nil {
			return geneErr(g.name, "%v", err)
		}
	}
	return nil
}

// jvalueOf turns a gene value back into a parsed JSON value.
func jvalueOf(x any) jvalue {
	switch v := x.(type) {
	case int64:
		return jvalue{kind: jNum, s: strconv.FormatInt(v, 10)}
	case PyFloat:
		return jvalue{kind: jNum, s: string(appendPyFloat(nil, float64(v)))}
	case bool:
		return jvalue{kind: jBool, b: v}
	case string:
		return jvalue{kind: jStr, s: v}
	}
	return jvalue{}
}

// Gene is one gene name with its value: int64, PyFloat, bool or string,
// ready for encoding/json.
type Gene struct {
	Name  string
	Value any
}

// GeneChange is one entry of a gene change: a name and its JSON value.
type GeneChange struct {
	Name  string
	Value json.RawMessage
}

// geneDef describes one gene. Genes without set are fixed identity genes.
type geneDef struct {
	name string
	get  func(c *Config, id, name string) any
	set  func(c *Config, v jvalue) error
}

// Gene names of §2 and §8.3, in the order Genes reports them. id and kb_id
// are the instance id and cannot change; name is the instance name.
var geneTable = []geneDef{
	{name: "id", get: func(_ *Config, id, _ string) any { return id }},
	{name: "name", get: func(_ *Config, _, name string) any { return name }},
	{name: "kb_id", get: func(_ *Config, id, _ string) any { return id }},
	{name: "classifier", get: func(c *Config, _, _ string) any { return c.Classifier },
		set: oneOf(func(c *Config) *string { return &c.Classifier }, "CVC")},
	{name: "indexer_type", get: func(c *Config, _, _ string) any { return c.IndexerType },
		set: oneOf(func(c *Config) *string { return &c.IndexerType }, "VI")},
	{name: "sort", get: func(c *Config, _, _ string) any { return c.Sort },
		set: boolGene(func(c *Config) *bool { return &c.Sort })},
	{name: "max_sequence_length", get: func(c *Config, _, _ string) any { return int64(c.MaxSequenceLength) },
		set: intGene(func(c *Config) *int { return &c.MaxSequenceLength })},
	{name: "max_predictions", get: func(c *Config, _, _ string) any { return int64(c.MaxPredictions) },
		set: intGene(func(c *Config) *int { return &c.MaxPredictions })},
	{name: "recall_threshold", get: func(c *Config, _, _ string) any { return PyFloat(c.RecallThreshold) },
		set: floatGene(func(c *Config) *float64 { return &c.RecallThreshold }, 0, 1)},
	{name: "persistence", get: func(c *Config, _, _ string) any { return int64(c.Persistence) },
		set: intGene(func(c *Config) *int { return &c.Persistence })},
	{name: "search_depth", get: func(c *Config, _, _ string) any { return int64(c.SearchDepth) },
		set: intGene(func(c *Config) *int { return &c.SearchDepth })},
	{name: "smoothness", get: func(c *Config, _, _ string) any { return int64(c.Smoothness) },
		set: intGene(func(c *Config) *int { return &c.Smoothness })},
	{name: "quiescence", get: func(c *Config, _, _ string) any { return int64(c.Quiescence) },
		set: intGene(func(c *Config) *int { return &c.Quiescence })},
	{name: "auto_act_method", get: func(c *Config, _, _ string) any { return c.AutoActMethod },
		set: stringGene(func(c *Config) *string { return &c.AutoActMethod })},
	{name: "auto_act_threshold", get: func(c *Config, _, _ string) any { return PyFloat(c.AutoActThreshold) },
		set: floatGene(func(c *Config) *float64 { return &c.AutoActThreshold }, math.Inf(-1), math.Inf(1))},
	{name: "always_update_frequencies", get: func(c *Config, _, _ string) any { return c.AlwaysUpdateFrequencies },
		set: boolGene(func(c *Config) *bool { return &c.AlwaysUpdateFrequencies })},
	{name: "process_predictions", get: func(c *Config, _, _ string) any { return c.ProcessPredictions },
		set: boolGene(func(c *Config) *bool { return &c.ProcessPredictions })},
}

func findGene(name string) (geneDef, bool) {
	for _, g := range geneTable {
		if g.name == name {
			return g, true
		}
	}
	return geneDef{}, false
}

func geneErr(name string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadGene, name, fmt.Sprintf(format, args...))
}

func intGene(field func(*Config) *int) func(*Config, jvalue) error {
	return func(c *Config, v jvalue) error {
		n, err := v.number("value")
		i, isInt := n.Int64()
		if err != nil || !isInt {
			return fmt.Errorf("must be an integer, not %s", describe(v))
		}
		if i < 0 || i > math.MaxInt32 {
			return fmt.Errorf("%d is out of range [0, %d]", i, math.MaxInt32)
		}
		*field(c) = int(i)
		return nil
	}
}

func floatGene(field func(*Config) *float64, lo, hi float64) func(*Config, jvalue) error {
	return func(c *Config, v jvalue) error {
		n, err := v.number("value")
		if err != nil {
			return fmt.Errorf("must be a number, not %s", describe(v))
		}
		f := n.Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) || f < lo || f > hi {
			return fmt.Errorf("%s is out of range [%s, %s]", n, PyFloat(lo), PyFloat(hi))
		}
		*field(c) = f
		return nil
	}
}

func boolGene(field func(*Config) *bool) func(*Config, jvalue) error {
	return func(c *Config, v jvalue) error {
		if v.kind != jBool {
			return fmt.Errorf("must be true or false, not %s", describe(v))
		}
		*field(c) = v.b
		return nil
	}
}

func stringGene(field func(*Config) *string) func(*Config, jvalue) error {
	return func(c *Config, v jvalue) error {
		if v.kind != jStr {
			return fmt.Errorf("must be a string, not %s", describe(v))
		}
		*field(c) = v.s
		return nil
	}
}

func oneOf(field func(*Config) *string, allowed string) func(*Config, jvalue) error {
	return func(c *Config, v jvalue) error {
		if v.kind != jStr || v.s != allowed {
			return fmt.Errorf("must be %q (the only one supported), not %s", allowed, describe(v))
		}
		*field(c) = v.s
		return nil
	}
}

// describe names a JSON value in an error message.
func describe(v jvalue) string {
	switch v.kind {
	case jNum:
		return "the number " + v.s
	case jStr:
		return "the string " + strconv.Quote(v.s)
	case jBool:
		return strconv.FormatBool(v.b)
	}
	return v.kind.String()
}

// applyGenes applies changes in order to a copy of cfg and name and returns
// the result; nothing is applied when any change is bad (all or nothing).
func applyGenes(cfg Config, id, name string, changes []GeneChange) (Config, string, error) {
	if len(changes) == 0 {
		return cfg, name, fmt.Errorf("%w: no genes given", ErrBadGene)
	}
	for _, ch := range changes {
		g, ok := findGene(ch.Name)
		if !ok {
			return cfg, name, geneErr(strconv.Quote(ch.Name), "unknown gene")
		}
		v, err := parseJSON(ch.Value)
		if err != nil {
			return cfg, name, geneErr(ch.Name, "value is not JSON")
		}
		switch ch.Name {
		case "id", "kb_id":
			if v.kind != jStr || v.s != id {
				return cfg, name, geneErr(ch.Name, "the instance id cannot change")
			}
		case "name":
			if v.kind != jStr || v.s == "" || utf8.RuneCountInString(v.s) > 128 || !validWTF8(v.s) {
				return cfg, name, geneErr(ch.Name, "must be a string of 1 to 128 characters")
			}
			name = v.s
		default:
			if err := g.set(&cfg, v); err != nil {
				return cfg, name, geneErr(ch.Name, "%v", err)
			}
		}
	}
	return cfg, name, nil
}

// DecodeGeneChanges decodes a genes/change body: {"data": {gene: value, ...}}
// (order kept) or {"gene_name": ..., "gene_value": ...} (8.3). Errors wrap
// ErrBadJSON or ErrBadGene. Like DecodeObservation it is linear and stops at
// the first token no gene accepts: a name that is no gene, or a value that
// is a list or an object.
func DecodeGeneChanges(body []byte) ([]GeneChange, error) {
	p := newDecoder(body)
	if err := p.checkSyntax(nil); err != nil {
		return nil, err
	}
	if p.kindAt() != jObj {
		return nil, fmt.Errorf("%w: body must be an object", ErrBadGene)
	}
	var data []GeneChange
	hasData := false
	var name string
	var value json.RawMessage
	err := p.members(func(key string) error {
		var err error
		switch key {
		case "data":
			hasData = true
			data, err = decodeGeneData(p)
		case "gene_name":
			if k := p.kindAt(); k != jStr {
				return shapeErr(ErrBadGene, "gene_name", "a non-empty string", k)
			}
			name, _ = p.str()
		case "gene_value":
			if value = nil; p.kindAt() == jNull {
				return p.skip(1) // as if missing
			}
			value, err = decodeGeneValue(p, "gene_value")
		default:
			err = p.skip(1)
		}
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case hasData:
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: data must be a non-empty object of genes", ErrBadGene)
		}
		return data, nil
	case name == "":
		return nil, fmt.Errorf("%w: gene_name must be a non-empty string", ErrBadGene)
	case value == nil:
		return nil, fmt.Errorf("%w: gene_value is missing", ErrBadGene)
	}
	return []GeneChange{{Name: strings.Clone(name), Value: value}}, nil
}

// decodeGeneData decodes {gene: value, ...}; a repeated gene keeps its
// first position and takes its last value.
func decodeGeneData(p *jparser) ([]GeneChange, error) {
	if k := p.kindAt(); k != jObj {
		return nil, shapeErr(ErrBadGene, "data", "a non-empty object of genes", k)
	}
	var out []GeneChange
	err := p.members(func(key string) error {
		g, ok := findGene(key)
		if !ok {
			return geneErr(strconv.Quote(key), "unknown gene")
		}
		v, err := decodeGeneValue(p, key)
		if err != nil {
			return err
		}
		for i := range out {
			if out[i].Name == g.name {
				out[i].Value = v
				return nil
			}
		}
		out = append(out, GeneChange{Name: g.name, Value: v})
		return nil
	})
	return out, err
}

// decodeGeneValue decodes a gene value: a number, string, boolean (or null,
// which no gene takes, for a clear error later).
func decodeGeneValue(p *jparser, name string) (json.RawMessage, error) {
	switch k := p.kindAt(); k {
	case jArr, jObj:
		return nil, geneErr(name, "must be a number, string or boolean, not %s", k)
	}
	v, _ := p.value(0)
	raw, err := v.appendPy(nil)
	if err != nil {
		return nil, geneErr(name, "%v", err)
	}
	return raw, nil
}
