//go:build linux

package main

// This file measures `katoctl models import` and `export` as a user runs
// them: the real binary (go build, no race detector) as a separate process,
// on a generated model of KATO_IMPORT_LINES records, reporting each
// process's peak RSS (getrusage of the child) and time, and holding both to
// the bound of issue 14: a million lines in at most 300 MB.

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// maxToolRSS is the peak resident memory allowed to an import or export,
// whatever the model's size.
const maxToolRSS = 300 << 20

// writeBulkExport writes an export of n records to file: patterns of the
// benchmark shape (processortest.BenchPattern, as node/load_bench_test.go's
// benchRecords makes them), and one vector per thousand records.
func writeBulkExport(t *testing.T, file string, n int) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	var line []byte
	for i := range n {
		var ch processor.Change
		if i%1000 == 999 {
			v := processor.IntVector(int64(i), int64(rng.IntN(100)), 3)
			ch = processor.Change{Kind: processor.PutVector, Vector: processor.VectorRecord{Name: processor.VectorName(v), Vector: v, Seq: uint64(i)}}
		} else {
			ch = processor.Change{Kind: processor.PutPattern, Pattern: processortest.BenchPattern(rng, i)}
		}
		if line, err = kb.AppendExportLine(line[:0], ch); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// measured is what a process cost: wall time, CPU time (user and system)
// and peak RSS. On a loaded machine the wall time says little; CPU time
// says what the process itself did.
type measured struct {
	took, cpu time.Duration
	rss       int64
}

func (m measured) String() string {
	return fmt.Sprintf("%v (CPU %v), peak RSS %d MB", m.took.Round(time.Millisecond), m.cpu.Round(time.Millisecond), m.rss>>20)
}

// runMeasured runs cmd to its end and returns what it cost.
func runMeasured(t *testing.T, cmd *exec.Cmd) measured {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	took := time.Since(start)
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no rusage of the child")
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return measured{took: took, cpu: cpu, rss: ru.Maxrss << 10} // KiB on Linux
}

func fileSum(t *testing.T, file string) [sha256.Size]byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// TestModelsImportExportMemory imports a generated export of
// KATO_IMPORT_LINES records (default 20,000) with the katoctl binary,
// exports it again, checks the export is the input byte for byte, and
// holds both processes to maxToolRSS. Run it at scale with
//
//	KATO_IMPORT_LINES=1000000 go test -run TestModelsImportExportMemory -v ./cmd/katoctl/
func TestModelsImportExportMemory(t *testing.T) {
	n := 20_000
	if s := os.Getenv("KATO_IMPORT_LINES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("KATO_IMPORT_LINES=%q: want a positive number", s)
		}
	}
	bin := clitest.BuildKatoctl(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "model.jsonl")
	writeBulkExport(t, in, n)
	st, err := os.Stat(in)
	if err != nil {
		t.Fatal(err)
	}

	c := etcdtest.New(t, etcdtest.WithQuota(8<<30))
	cli := katoClient(t, c)
	flags := []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--command-timeout", "60s"}

	m := runMeasured(t, exec.Command(bin, append(flags, "models", "import", "--progress", "0", "big", in)...))
	t.Logf("import of %d records (%d MB of JSON lines): %v (%d bytes a record)", n, st.Size()>>20, m, m.rss/int64(n))
	if m.rss > maxToolRSS {
		t.Errorf("import peak RSS %d MB, more than %d MB", m.rss>>20, maxToolRSS>>20)
	}
	s := summary(t, cli, "big")
	if s.Head == nil || s.Patterns+s.Vectors != int64(n) {
		t.Fatalf("imported model %+v, want %d records", s, n)
	}
	t.Logf("stored snapshot: %d chunks, %d MB (%d bytes a record)", s.Head.Chunks, s.SnapshotBytes>>20, s.SnapshotBytes/int64(n))

	out := filepath.Join(dir, "export.jsonl")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	exp := exec.Command(bin, append(flags, "models", "export", "--progress", "0", "big")...)
	exp.Stdout = f
	m = runMeasured(t, exp)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("export of %d records: %v", n, m)
	if m.rss > maxToolRSS {
		t.Errorf("export peak RSS %d MB, more than %d MB", m.rss>>20, maxToolRSS>>20)
	}
	if fileSum(t, out) != fileSum(t, in) {
		t.Fatalf("the export of the imported model differs from the file imported (%s, %s)", in, out)
	}
}
