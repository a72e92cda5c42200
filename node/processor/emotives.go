package processor

// This file is emotives: their JSON form, sums of numbers as Python sums them,
// and the averages of an observation's emotives and of a model's window.

import (
	"math"
	"math/big"
)

// Emotive is one named emotive value of a model or of the cognition data.
type Emotive struct {
	Name  string
	Value float64
}

// Emotives is an emotive dict in Python's insertion order.
type Emotives []Emotive

// MarshalJSON writes the dict with Python-style floats.
func (e Emotives) MarshalJSON() ([]byte, error) { return e.appendJSON(nil) }

func (e Emotives) appendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, '{')
	for i, x := range e {
		if i > 0 {
			dst = append(dst, ',')
		}
		if math.IsNaN(x.Value) || math.IsInf(x.Value, 0) {
			return nil, errNonFinite
		}
		dst = appendJSONString(dst, x.Name)
		dst = append(dst, ':')
		dst = appendPyFloat(dst, x.Value)
	}
	return append(dst, '}'), nil
}

// UnmarshalJSON reads a dict of numbers, keeping its order.
func (e *Emotives) UnmarshalJSON(b []byte) error {
	v, err := parseJSON(b)
	if err != nil {
		return err
	}
	return e.fromJSON(v)
}

// fromJSON reads a parsed dict of numbers.
func (e *Emotives) fromJSON(v jvalue) error {
	ev, err := emotivesOf(v, "emotives")
	if err != nil {
		return err
	}
	out := make(Emotives, len(ev))
	for i, x := range ev {
		out[i] = Emotive{x.Name, x.Value.f}
	}
	*e = out
	return nil
}

func (e Emotives) clone() Emotives {
	if e == nil {
		return nil
	}
	return append(Emotives{}, e...)
}

// EmotiveValue is one emotive of an observation, as given (int or float).
type EmotiveValue struct {
	Name  string
	Value Number
}

// numSum sums numbers like Python's sum() over a list of ints and floats:
// exact integers until the first float, then float64 left to right.
type numSum struct {
	isFloat bool
	f       float64
	i       int64
	big     *big.Int // the integer sum once it left int64
	n       int64
}

func (s *numSum) add(x Number) {
	s.n++
	if !s.isFloat && !x.isFloat {
		if s.big == nil {
			r := s.i + x.i
			if (x.i >= 0) == (r >= s.i) { // no overflow
				s.i = r
				return
			}
			s.big = big.NewInt(s.i)
		}
		s.big.Add(s.big, big.NewInt(x.i))
		return
	}
	if !s.isFloat {
		s.f, s.isFloat = s.intAsFloat(), true
	}
	s.f += x.f
}

func (s *numSum) intAsFloat() float64 {
	if s.big == nil {
		return float64(s.i)
	}
	f, _ := new(big.Float).SetInt(s.big).Float64()
	return f
}

// mean is float(sum / count), Python's true division.
func (s *numSum) mean() float64 {
	if s.isFloat {
		return s.f / float64(s.n)
	}
	const exact = 1 << 53
	if s.big == nil && s.i <= exact && s.i >= -exact {
		return float64(s.i) / float64(s.n)
	}
	num := s.big
	if num == nil {
		num = big.NewInt(s.i)
	}
	f, _ := new(big.Rat).SetFrac(num, big.NewInt(s.n)).Float64()
	return f
}

// averageEmotives is KATO's average_emotives: for each key, in order of first
// appearance, the mean over the dicts in which it occurs (PROCESSOR.md 5.3).
func averageEmotives(dicts [][]EmotiveValue) Emotives {
	var names []string
	var sums []numSum
	index := map[string]int{}
	for _, d := range dicts {
		for _, x := range d {
			k, ok := index[x.Name]
			if !ok {
				k = len(names)
				index[x.Name] = k
				names = append(names, x.Name)
				sums = append(sums, numSum{})
			}
			sums[k].add(x.Value)
		}
	}
	if len(names) == 0 {
		return nil
	}
	out := make(Emotives, len(names))
	for k, name := range names {
		out[k] = Emotive{name, sums[k].mean()}
	}
	return out
}

// averageStored averages a model's stored emotive window.
func averageStored(window []Emotives) Emotives {
	if len(window) == 0 {
		return nil
	}
	dicts := make([][]EmotiveValue, len(window))
	for i, e := range window {
		d := make([]EmotiveValue, len(e))
		for j, x := range e {
			d[j] = EmotiveValue{x.Name, Float(x.Value)}
		}
		dicts[i] = d
	}
	return averageEmotives(dicts)
}

// dropZeros removes the keys whose value is exactly 0 (KATO's `v != 0`).
func dropZeros(e Emotives) Emotives {
	out := Emotives{}
	for _, x := range e {
		if x.Value != 0 {
			out = append(out, x)
		}
	}
	return out
}
