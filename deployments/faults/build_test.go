// This file builds the binaries under test: katonode (optionally with build
// tags such as kato_nofence) and etcd at go.mod's version.

package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the directory of the go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("faults: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildKatonode builds cmd/katonode of the module at root into dir, with the
// build tags given (e.g. "kato_nofence"), and returns the binary's path. It
// is a plain build (no race detector): the processes under test run at the
// speed they would in production.
func BuildKatonode(ctx context.Context, root, dir, tags string) (string, error) {
	name := "katonode"
	if tags != "" {
		name += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./cmd/katonode")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("faults: go %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return out, nil
}

// BuildEtcd builds etcd at go.mod's version with deployments/docker/build-images.sh
// --binaries-only (which caches its build in KATO_BUILD_DIR, by default
// ~/.cache/kato-deploy, and lets concurrent runs take turns), and copies the
// binary into dir so that a later rebuild cannot change it under the run.
func BuildEtcd(ctx context.Context, root, dir string) (string, error) {
	script := filepath.Join(root, "deployments", "docker", "build-images.sh")
	cmd := exec.CommandContext(ctx, script, "--binaries-only")
	cmd.Dir = root
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("faults: %s --binaries-only: %w\n%s", script, err, buf.String())
	}
	src := ""
	for _, line := range strings.Split(buf.String(), "\n") {
		if d, ok := strings.CutPrefix(line, "build-images: binaries in "); ok {
			src = filepath.Join(strings.TrimSpace(d), "etcd")
		}
	}
	if src == "" {
		return "", fmt.Errorf("faults: build-images.sh did not say where the binaries are:\n%s", buf.String())
	}
	out := filepath.Join(dir, "etcd")
	if err := copyFile(src, out); err != nil {
		return "", err
	}
	return out, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
