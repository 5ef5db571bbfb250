package ingest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqxsim"
)

// testCA is a CA with one server certificate for "emqx.test".
type testCA struct {
	pemFile string
	server  tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetwatch test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	skey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "emqx.test"},
		DNSNames: []string{"emqx.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	sder, err := x509.CreateCertificate(rand.Reader, stmpl, ca, &skey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testCA{pemFile: file, server: tls.Certificate{Certificate: [][]byte{sder}, PrivateKey: skey}}
}

// TestTLSBrokerWithPasswordFile: ingest reaches a TLS-only broker with a
// private CA and server name, authenticates with a password read from a
// file, stores events, and never logs the password.
func TestTLSBrokerWithPasswordFile(t *testing.T) {
	e := newEnv(t)
	ca := newTestCA(t)
	broker, err := emqxsim.New(emqxsim.Config{TLS: &tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	pwFile := filepath.Join(t.TempDir(), "mqtt-password")
	if err := os.WriteFile(pwFile, []byte("pw-Zq8x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.MQTT.Broker = broker.Addr()
	cfg.MQTT.Username, cfg.MQTT.PasswordFile = "fleetwatch", pwFile
	cfg.MQTT.TLS.CAFile, cfg.MQTT.TLS.ServerName = ca.pemFile, "emqx.test"
	logs := &telemetrytest.LogBuffer{}
	svc, _ := e.startWith(cfg, logs)
	sub := e.subscribe(events.StreamPresence, events.PresenceSubject("tls-1", events.DefaultPartitions))
	if err := broker.Publish("$SYS/brokers/emqx@n1/clients/tls-1/connected", []byte(`{"clientid":"tls-1","protocol":"mqtt","connected_at":1718000000000}`), 1); err != nil {
		t.Fatal(err)
	}
	if ev := sub.nextEvent(); ev.DeviceID != "tls-1" {
		t.Fatalf("got %+v", ev)
	}
	e.waitStats(svc, ingest.Stats{Received: 1, Published: 1})
	if strings.Contains(logs.String(), "pw-Zq8x") {
		t.Fatalf("the password was logged:\n%s", logs.String())
	}
}

// TestTLSBrokerWithWrongCA: a broker certificate from another CA is
// refused; ingest stays unready and says why.
func TestTLSBrokerWithWrongCA(t *testing.T) {
	e := newEnv(t)
	good, other := newTestCA(t), newTestCA(t)
	broker, err := emqxsim.New(emqxsim.Config{TLS: &tls.Config{Certificates: []tls.Certificate{good.server}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	cfg := e.config()
	cfg.MQTT.Broker = broker.Addr()
	cfg.MQTT.TLS.CAFile, cfg.MQTT.TLS.ServerName = other.pemFile, "emqx.test"
	logs := &telemetrytest.LogBuffer{}
	svc, err := ingest.New(cfg, ingest.Deps{NATS: e.nc, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.eventually("a refused certificate logged", func() error {
		if !strings.Contains(logs.String(), "certificate signed by unknown authority") {
			return errors.New("not yet")
		}
		return nil
	})
	if err := svc.Ready(); err == nil {
		t.Fatal("ready with an untrusted broker certificate")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSecretsFromEnv: the webhook token and the reconcile API secret are
// read from the environment; an unset variable is an error naming the
// variable, never a value.
func TestSecretsFromEnv(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Webhook.Enabled, cfg.Webhook.TokenEnv = true, "FLEETWATCH_TEST_UNSET_TOKEN"
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil ||
		err.Error() != "ingest.webhook.token_env: environment variable FLEETWATCH_TEST_UNSET_TOKEN is not set" {
		t.Errorf("New = %v", err)
	}
	t.Setenv("FLEETWATCH_TEST_EMPTY_TOKEN", "")
	cfg.Webhook.TokenEnv = "FLEETWATCH_TEST_EMPTY_TOKEN"
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil ||
		err.Error() != "ingest.webhook.token is empty: put the shared secret in the file or variable" {
		t.Errorf("New with an empty token = %v", err)
	}
	cfg = e.config()
	cfg.Reconcile.Enabled, cfg.Reconcile.URL, cfg.Reconcile.APIKey = true, "http://127.0.0.1:1", "k"
	cfg.Reconcile.APISecretFile = "/nonexistent/secret"
	if _, err := ingest.New(cfg, ingest.Deps{NATS: e.nc}); err == nil || !strings.HasPrefix(err.Error(), "ingest.reconcile.api_secret_file: ") {
		t.Errorf("New with a missing secret file = %v", err)
	}
}
