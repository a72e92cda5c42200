package cliutil

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorLineDropsRepeatedPackagePrefixes(t *testing.T) {
	err := fmt.Errorf("coord: register a: %w", fmt.Errorf("coord: session lease lost: %w", errors.New("node: lease\nnot found")))
	if got, want := ErrorLine(err), "register a: session lease lost: lease not found"; got != want {
		t.Fatalf("ErrorLine = %q, want %q", got, want)
	}
}
