package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config is the evaluator.api section.
type Config struct {
	// Listen is host:port of the API ("" turns it off).
	Listen string `yaml:"listen"`
	// TokenFile and TokenEnv name where the bearer token of state-changing
	// calls is read from (a file, trailing newline trimmed, or an
	// environment variable). Without a token, state-changing calls are
	// refused.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// MaxBodyBytes bounds a request body (default 65536).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxLimit bounds the page size of device lists (default 1000).
	MaxLimit int `yaml:"max_limit"`
	// Timeout bounds how long a query waits for the evaluator's goroutine
	// (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = 1000
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

// Validate checks the settings (defaults applied); errors name the field
// under prefix.
func (c Config) Validate(prefix string) error {
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("%s.listen is %q: use host:port, e.g. 127.0.0.1:9480", prefix, c.Listen)
		}
	}
	switch {
	case c.TokenFile != "" && c.TokenEnv != "":
		return fmt.Errorf("%s: token_file and token_env are both set: keep one", prefix)
	case c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 16<<20:
		return fmt.Errorf("%s.max_body_bytes is %d: use 1024 to 16777216, e.g. 65536", prefix, c.MaxBodyBytes)
	case c.MaxLimit < 1 || c.MaxLimit > 100_000:
		return fmt.Errorf("%s.max_limit is %d: use 1 to 100000, e.g. 1000", prefix, c.MaxLimit)
	case c.Timeout < 100*time.Millisecond:
		return fmt.Errorf("%s.timeout is %s: use at least 100ms, e.g. 10s", prefix, c.Timeout)
	}
	return nil
}

// LoadToken returns the bearer token that TokenFile or TokenEnv name ("",
// nil when neither is set). Errors never contain the token.
func (c Config) LoadToken(prefix string) (string, error) {
	var tok string
	switch {
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("%s.token_file: %w", prefix, err)
		}
		tok = strings.TrimRight(string(b), "\r\n")
		if tok == "" {
			return "", fmt.Errorf("%s.token_file %s is empty: write the token in it", prefix, c.TokenFile)
		}
	case c.TokenEnv != "":
		tok = os.Getenv(c.TokenEnv)
		if tok == "" {
			return "", fmt.Errorf("%s.token_env: $%s is empty or unset: export the token in it", prefix, c.TokenEnv)
		}
	default:
		return "", nil
	}
	if len(tok) < 16 {
		return "", errors.New(prefix + ": the token is shorter than 16 characters: use a long random token, e.g. from `openssl rand -hex 32`")
	}
	return tok, nil
}
