package coord

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zaptest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The embedded member runs with auto-compaction and a quota by default, and
// takes other values of both; a retention that is neither a duration nor a
// revision count is refused with the flag's name.
func TestEmbeddedCompactsAndHasAQuota(t *testing.T) {
	for _, tc := range []struct {
		retention, mode, value string
		quota, wantQuota       int64
	}{
		{"", embed.CompactorModePeriodic, "1h", 0, DefaultQuotaBackendBytes},
		{"10000", embed.CompactorModeRevision, "10000", 64 << 20, 64 << 20},
		{"30m", embed.CompactorModePeriodic, "30m", 0, DefaultQuotaBackendBytes},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t),
			AutoCompactionRetention: tc.retention, QuotaBackendBytes: tc.quota}, zaptest.NewLogger(t))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.etcd.Config()
		e.Close()
		if cfg.AutoCompactionMode != tc.mode || cfg.AutoCompactionRetention != tc.value || cfg.QuotaBackendBytes != tc.wantQuota {
			t.Errorf("retention %q quota %d: mode %s retention %s quota %d, want %s %s %d", tc.retention, tc.quota,
				cfg.AutoCompactionMode, cfg.AutoCompactionRetention, cfg.QuotaBackendBytes, tc.mode, tc.value, tc.wantQuota)
		}
	}
	for _, bad := range []EmbeddedConfig{{AutoCompactionRetention: "weekly"}, {QuotaBackendBytes: -1}} {
		_, err := StartEmbedded(context.Background(), EmbeddedConfig{DataDir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t),
			AutoCompactionRetention: bad.AutoCompactionRetention, QuotaBackendBytes: bad.QuotaBackendBytes}, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), "--etcd-") {
			t.Errorf("%+v: %v, want an error naming the flag", bad, err)
		}
	}
}
