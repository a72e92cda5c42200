package coord_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// tlsServer accepts TLS connections with cert/key and finishes handshakes.
func tlsServer(t *testing.T, certFile, keyFile string, clientCAs *x509.CertPool) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				c.Read(make([]byte, 1))
			}()
		}
	}()
	return l.Addr().String()
}

// A TLS failure is named (unknown authority, expired certificate, handshake
// refused), not reported as a deadline; a user without a password is refused
// before anything is sent (issue 18).
func TestConnectNamesTheCause(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	certs, other := etcdtest.NewCerts(t), etcdtest.NewCerts(t)
	cert, key := certs.Valid(t, "server", "127.0.0.1")
	expiredCert, expiredKey := certs.Issue(t, "expired", []string{"127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	caPEM, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	for _, tc := range []struct {
		name string
		cfg  coord.ClientConfig
		want string
	}{
		{"unknown authority", coord.ClientConfig{Endpoints: []string{tlsServer(t, cert, key, nil)}, CACert: other.CAFile}, "unknown authority"},
		{"expired", coord.ClientConfig{Endpoints: []string{tlsServer(t, expiredCert, expiredKey, nil)}, CACert: certs.CAFile}, "expired"},
		{"client certificate refused", coord.ClientConfig{Endpoints: []string{tlsServer(t, cert, key, pool)}, CACert: certs.CAFile}, "handshake refused"},
		{"no TLS", coord.ClientConfig{Endpoints: []string{plain.Addr().String()}, CACert: certs.CAFile}, "does not speak TLS"},
		{"user without password", coord.ClientConfig{Endpoints: []string{"127.0.0.1:1"}, User: "kato"}, "no password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DialTimeout = time.Second
			cli, err := coord.Connect(ctx, tc.cfg, zaptest.NewLogger(t))
			if err == nil {
				cli.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
