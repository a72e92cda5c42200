package processor

// This file holds the package's errors: the categories the HTTP layer maps to
// status codes, the specific errors that wrap them, and their error codes.

import (
	"errors"
	"fmt"
)

// Error categories. Every error returned by this package for bad input or a
// failed lookup wraps exactly one of them, so the HTTP layer can map it with
// errors.Is: ErrInvalid → 400, ErrNotFound → 404. Anything else is a 500.
var (
	// ErrInvalid marks a request the caller got wrong (PROCESSOR.md D6).
	ErrInvalid = errors.New("processor: invalid request")
	// ErrNotFound marks a lookup of a model or gene that does not exist.
	ErrNotFound = errors.New("processor: not found")
	// ErrCorrupt marks stored records that cannot be loaded.
	ErrCorrupt = errors.New("processor: corrupt stored record")
	// ErrTooLarge marks a call refused because a record it would store is
	// larger than the bound set with SetMaxRecordBytes; the call changed
	// nothing (413).
	ErrTooLarge = errors.New("processor: change too large to store")
)

// Specific errors; each wraps its category.
var (
	// ErrBadJSON: the body is not valid JSON (400).
	ErrBadJSON = fmt.Errorf("%w: invalid JSON", ErrInvalid)
	// ErrBadObservation: a missing required key, a wrong type, a non-finite
	// number or vectors of different lengths in an observation (400).
	ErrBadObservation = fmt.Errorf("%w: bad observation", ErrInvalid)
	// ErrBadGene: an unknown gene name, a value of the wrong type or range, or
	// a gene that cannot change, in a gene change (400).
	ErrBadGene = fmt.Errorf("%w: bad gene change", ErrInvalid)
	// ErrUnknownModel: no model has that name (404).
	ErrUnknownModel = fmt.Errorf("%w: unknown model", ErrNotFound)
	// ErrUnknownGene: a gene read by a name that is not a gene (404).
	ErrUnknownGene = fmt.Errorf("%w: unknown gene", ErrNotFound)
)

// ErrorCode returns the machine-readable error_code for an error of this
// package ("" for errors it does not know), for the JSON error body of D6.
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrBadJSON):
		return "INVALID_JSON"
	case errors.Is(err, ErrBadObservation):
		return "INVALID_OBSERVATION"
	case errors.Is(err, ErrBadGene):
		return "INVALID_GENE"
	case errors.Is(err, ErrUnknownModel):
		return "MODEL_NOT_FOUND"
	case errors.Is(err, ErrUnknownGene):
		return "GENE_NOT_FOUND"
	case errors.Is(err, ErrCorrupt):
		return "CORRUPT_RECORD"
	case errors.Is(err, ErrTooLarge):
		return "CHANGE_TOO_LARGE"
	case errors.Is(err, ErrInvalid):
		return "BAD_REQUEST"
	case errors.Is(err, ErrNotFound):
		return "NOT_FOUND"
	}
	return ""
}
