package natsconn

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"url", Config{URL: "nats://127.0.0.1:4222"}, ""},
		{"cluster urls", Config{URL: "nats://a:4222, tls://b:4222,nats://c:4222"}, ""},
		{"user and password env", Config{URL: "nats://a:4222", User: "fleetwatch", PasswordEnv: "NATS_PASSWORD"}, ""},
		{"user and password file", Config{URL: "nats://a:4222", User: "fleetwatch", PasswordFile: "/run/secrets/nats"}, ""},
		{"tls", Config{URL: "tls://a:4222", CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}, ""},
		{"creds", Config{URL: "nats://a:4222", CredsFile: "x.creds"}, ""},

		{"empty url", Config{}, "nats.url is empty: set it to the NATS server, e.g. nats://127.0.0.1:4222"},
		{"blank url", Config{URL: "  "}, "nats.url is empty: set it to the NATS server, e.g. nats://127.0.0.1:4222"},
		{"no scheme", Config{URL: "127.0.0.1:4222"}, `nats.url "127.0.0.1:4222" has no scheme: write nats://127.0.0.1:4222 or tls://127.0.0.1:4222`},
		{"one of several without scheme", Config{URL: "nats://a:4222, b:4222"}, `nats.url "b:4222" has no scheme: write nats://b:4222 or tls://b:4222`},
		{"trailing comma", Config{URL: "nats://a:4222,"}, `nats.url "" has no scheme: write nats:// or tls://`},
		{"no scheme with password", Config{URL: "fleetwatch:s3cret@nats:4222"}, `nats.url "***@nats:4222" has no scheme: write nats://***@nats:4222 or tls://***@nats:4222`},
		{"cert without key", Config{URL: "tls://a:4222", CertFile: "c.pem"}, "nats.cert_file and nats.key_file go together: set both or neither"},
		{"key without cert", Config{URL: "tls://a:4222", KeyFile: "k.pem"}, "nats.cert_file and nats.key_file go together: set both or neither"},
		{"two password sources", Config{URL: "nats://a:4222", User: "u", PasswordFile: "f", PasswordEnv: "E"}, "nats.password_file and nats.password_env are both set: keep one"},
		{"two token sources", Config{URL: "nats://a:4222", TokenFile: "f", TokenEnv: "E"}, "nats.token_file and nats.token_env are both set: keep one"},
		{"password without user (env)", Config{URL: "nats://a:4222", PasswordEnv: "E"}, "nats.password_* is set without nats.user: set the user name too"},
		{"password without user (file)", Config{URL: "nats://a:4222", PasswordFile: "f"}, "nats.password_* is set without nats.user: set the user name too"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("FLEETWATCH_TEST_SECRET", "env-s3cret")
	t.Setenv("FLEETWATCH_TEST_EMPTY", "")

	tests := []struct {
		name      string
		file, env string
		want      string
	}{
		{"file", write("plain", "file-s3cret"), "", "file-s3cret"},
		{"file with newline", write("lf", "file-s3cret\n"), "", "file-s3cret"},
		{"file with crlf", write("crlf", "file-s3cret\r\n\r\n"), "", "file-s3cret"},
		{"file keeps other spaces", write("spaces", " file s3cret \t\n"), "", " file s3cret \t"},
		{"empty file", write("empty", ""), "", ""},
		{"env", "", "FLEETWATCH_TEST_SECRET", "env-s3cret"},
		{"env set but empty", "", "FLEETWATCH_TEST_EMPTY", ""},
		{"file wins over env", write("both", "file-s3cret"), "FLEETWATCH_TEST_SECRET", "file-s3cret"},
		{"neither", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Secret("notifier.dingtalk.secret", tt.file, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Secret = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSecretErrors(t *testing.T) {
	t.Setenv("FLEETWATCH_TEST_SECRET", "env-s3cret")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")

	_, err := Secret("nats.password", missing, "FLEETWATCH_TEST_SECRET")
	if want := "nats.password_file: open " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Fatalf("missing file: error %v, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: error %v does not wrap fs.ErrNotExist", err)
	}

	_, err = Secret("nats.password", dir, "") // a directory, not a file
	if want := "nats.password_file: read " + dir + ": is a directory"; err == nil || err.Error() != want {
		t.Fatalf("directory: error %v, want %q", err, want)
	}

	os.Unsetenv("FLEETWATCH_TEST_UNSET")
	_, err = Secret("nats.token", "", "FLEETWATCH_TEST_UNSET")
	if want := "nats.token_env: environment variable FLEETWATCH_TEST_UNSET is not set"; err == nil || err.Error() != want {
		t.Fatalf("unset env: error %v, want %q", err, want)
	}
}

// startAuthServer runs a server that requires a user/password or a token.
func startAuthServer(t *testing.T, opts server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
	s, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func TestConnect(t *testing.T) {
	s := natstest.Start(t)
	nc, err := Connect(Config{URL: s.URL(), Name: "fleetwatch-test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	if nc.Opts.Name != "fleetwatch-test" || nc.Opts.MaxReconnect != -1 {
		t.Fatalf("name %q max reconnects %d; want fleetwatch-test and -1 (forever)", nc.Opts.Name, nc.Opts.MaxReconnect)
	}
	// The connection works end to end.
	sub, err := nc.SubscribeSync("ping")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ping", []byte("pong")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "pong" {
		t.Fatalf("round trip: %v %v", m, err)
	}
}

func TestConnectValidatesFirst(t *testing.T) {
	_, err := Connect(Config{URL: "127.0.0.1:4222"}, nil)
	if want := `nats.url "127.0.0.1:4222" has no scheme: write nats://127.0.0.1:4222 or tls://127.0.0.1:4222`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestConnectWithPassword(t *testing.T) {
	const password = "pw-s3cret-Zq9"
	url := startAuthServer(t, server.Options{Username: "fleetwatch", Password: password})
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEETWATCH_TEST_NATS_PASSWORD", password)
	t.Setenv("FLEETWATCH_TEST_WRONG_PASSWORD", "wrong-"+password)

	for name, cfg := range map[string]Config{
		"from file": {URL: url, User: "fleetwatch", PasswordFile: file},
		"from env":  {URL: url, User: "fleetwatch", PasswordEnv: "FLEETWATCH_TEST_NATS_PASSWORD"},
	} {
		nc, err := Connect(cfg, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}

	_, err := Connect(Config{URL: url, User: "fleetwatch", PasswordEnv: "FLEETWATCH_TEST_WRONG_PASSWORD"}, nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: error %v, want ErrAuthorization", err)
	}
	assertNoSecret(t, err, password)

	_, err = Connect(Config{URL: url, User: "fleetwatch", PasswordEnv: "FLEETWATCH_TEST_UNSET_PASSWORD"}, nil)
	if want := "nats.password_env: environment variable FLEETWATCH_TEST_UNSET_PASSWORD is not set"; err == nil || err.Error() != want {
		t.Fatalf("unset env: error %v, want %q", err, want)
	}
}

func TestConnectWithToken(t *testing.T) {
	const token = "tok-s3cret-Xy7"
	url := startAuthServer(t, server.Options{Authorization: token})
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := Connect(Config{URL: url, TokenFile: file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	t.Setenv("FLEETWATCH_TEST_TOKEN", "bad-"+token)
	_, err = Connect(Config{URL: url, TokenEnv: "FLEETWATCH_TEST_TOKEN"}, nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong token: error %v, want ErrAuthorization", err)
	}
	assertNoSecret(t, err, token)
}

func TestConnectErrorsHidePasswordsInURLs(t *testing.T) {
	const password = "url-s3cret"
	tests := []struct {
		url   string
		want  string
		isErr error // wrapped sentinel, when the chain is kept
	}{
		{
			url:   "nats://fleetwatch:" + password + "@127.0.0.1:1",
			want:  "connect to nats at nats://***@127.0.0.1:1: nats: no servers available for connection",
			isErr: nats.ErrNoServers,
		},
		{
			url:  "nats://fleetwatch:" + password + "@127.0.0.1:notaport",
			want: `connect to nats at nats://***@127.0.0.1:notaport: parse "nats://***@127.0.0.1:notaport": invalid port ":notaport" after host`,
		},
		{
			url:  "nats://a:4222,nats://fleetwatch:" + password + "@[::1",
			want: `connect to nats at nats://a:4222,nats://***@[::1: parse "nats://***@[::1": missing ']' in host`,
		},
		{
			url:  "nats://" + password + "@127.0.0.1:4222%zz",
			want: `connect to nats at nats://***@127.0.0.1:4222%zz: parse "nats://***@127.0.0.1:4222%zz": invalid port ":4222%zz" after host`,
		},
	}
	for _, tt := range tests {
		_, err := Connect(Config{URL: tt.url}, nil)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Connect(%q): error %v\nwant %q", tt.url, err, tt.want)
			continue
		}
		assertNoSecret(t, err, password)
		if tt.isErr != nil && !errors.Is(err, tt.isErr) {
			t.Errorf("Connect(%q): error %v does not wrap %v", tt.url, err, tt.isErr)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:pw@host:4222", "nats://***@host:4222"},
		{"nats://token@host:4222", "nats://***@host:4222"},
		{"tls://user:p@ss@host:4222", "tls://***@host:4222"},
		{"nats://a:1,nats://u:pw@b:2,nats://c:3", "nats://a:1,nats://***@b:2,nats://c:3"},
		{"user:pw@host:4222", "***@host:4222"},
		{"nats://@host", "nats://@host"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// assertNoSecret checks err's text and every error it wraps.
func assertNoSecret(t *testing.T, err error, secret string) {
	t.Helper()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), secret) {
			t.Fatalf("error %q shows the secret", e)
		}
	}
}
