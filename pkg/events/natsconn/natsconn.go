// Package natsconn opens fleetwatch's NATS connections from configuration:
// URL, credentials (creds file, NKey seed, token or user/password, each from a
// file or an environment variable) and TLS. Secrets never appear in errors.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Config describes how to reach NATS.
type Config struct {
	// URL is one or more comma-separated server URLs (nats://, tls://).
	URL string `yaml:"url"`
	// Name is the connection name shown by the server (defaults to the stage).
	Name string `yaml:"name"`
	// CredsFile is a NATS .creds file (JWT + NKey seed).
	CredsFile string `yaml:"creds_file"`
	// NKeySeedFile is a file holding an NKey seed.
	NKeySeedFile string `yaml:"nkey_seed_file"`
	// User and the password, read from PasswordFile or PasswordEnv.
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// TokenFile or TokenEnv hold an auth token.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// TLS settings; any of them turns TLS on.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Validate checks the settings without touching the network.
func (c Config) Validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("nats.url is empty: set it to the NATS server, e.g. nats://127.0.0.1:4222")
	}
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			r := redactURL(u)
			return fmt.Errorf("nats.url %q has no scheme: write nats://%s or tls://%s", r, r, r)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("nats.cert_file and nats.key_file go together: set both or neither")
	}
	if c.PasswordFile != "" && c.PasswordEnv != "" {
		return errors.New("nats.password_file and nats.password_env are both set: keep one")
	}
	if c.TokenFile != "" && c.TokenEnv != "" {
		return errors.New("nats.token_file and nats.token_env are both set: keep one")
	}
	if (c.PasswordFile != "" || c.PasswordEnv != "") && c.User == "" {
		return errors.New("nats.password_* is set without nats.user: set the user name too")
	}
	return nil
}

// Secret reads a secret from a file (trailing newline trimmed) or from an
// environment variable. field names the setting in errors; the value is never
// part of an error.
func Secret(field, file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", field, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("%s_env: environment variable %s is not set", field, env)
		}
		return v, nil
	}
	return "", nil
}

// Connect opens a connection that reconnects forever with backoff and logs
// connection changes.
func Connect(c Config, logger *slog.Logger) (*nats.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		pw, err := Secret("nats.password", c.PasswordFile, c.PasswordEnv)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	if tok, err := Secret("nats.token", c.TokenFile, c.TokenEnv); err != nil {
		return nil, err
	} else if tok != "" {
		opts = append(opts, nats.Token(tok))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, connectError(c.URL, err)
	}
	return nc, nil
}

// connectError wraps a connection error. URL parse errors quote the whole
// URL, password included: when err's text holds the user info of any URL,
// that text is replaced by "***" and the chain is cut, so that no caller can
// reach the secret through errors.Unwrap either.
func connectError(urls string, err error) error {
	msg := err.Error()
	for _, u := range strings.Split(urls, ",") {
		if info := userInfo(u); info != "" {
			msg = strings.ReplaceAll(msg, info, "***")
		}
	}
	if msg != err.Error() {
		return fmt.Errorf("connect to nats at %s: %s", redact(urls), msg)
	}
	return fmt.Errorf("connect to nats at %s: %w", redact(urls), err)
}

// redact removes user info from URLs so that passwords never reach logs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		parts[i] = redactURL(u)
	}
	return strings.Join(parts, ",")
}

// redactURL replaces the user info of one URL (with or without a scheme)
// by "***".
func redactURL(u string) string {
	info := userInfo(u)
	if info == "" {
		return u
	}
	i := strings.Index(u, info)
	return u[:i] + "***" + u[i+len(info):]
}

// userInfo returns the "user:password" or token part of a URL: what lies
// between the scheme (if any) and the last "@".
func userInfo(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return ""
	}
	start := 0
	if s := strings.Index(u, "://"); s >= 0 && s < at {
		start = s + 3
	}
	return u[start:at]
}
