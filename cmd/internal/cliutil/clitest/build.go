package clitest

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildKatoctl builds the katoctl binary (go build, no race detector) into
// the test's temporary directory and returns its path, for tests that run
// it as a separate process.
func BuildKatoctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "katoctl")
	build := exec.Command("go", "build", "-o", bin, "github.com/kato-coord/kato/cmd/katoctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build katoctl: %v\n%s", err, out)
	}
	return bin
}
