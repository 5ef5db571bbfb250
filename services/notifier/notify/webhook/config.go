package webhook

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// DefaultMaxBytes is the default request body budget.
const DefaultMaxBytes = 20000

// Config configures one generic JSON webhook.
type Config struct {
	// URL is where the JSON is POSTed. It may hold a token: prefer
	// URLFile or URLEnv then.
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	URLEnv  string `yaml:"url_env"`
	// SecretFile or SecretEnv turn on the signature headers:
	// X-Fleetwatch-Timestamp (epoch seconds) and X-Fleetwatch-Signature
	// ("sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)).
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// Keyword goes into every title's envelope.
	Keyword string `yaml:"keyword"`
	// Language of the title and text: zh (default) or en.
	Language string `yaml:"language"`
	// Timezone renders times (default: the host's).
	Timezone string `yaml:"timezone"`
	// MaxBytes is the body budget (default 20000).
	MaxBytes int `yaml:"max_bytes"`
}

// Validate checks the settings without reading secrets.
func (c Config) Validate(field string) error {
	n := 0
	for _, s := range []string{c.URL, c.URLFile, c.URLEnv} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Errorf("%s.url is empty: set url_env (or url_file, or url) to the endpoint's URL", field)
	case n > 1:
		return fmt.Errorf("%s: url, url_file and url_env are exclusive: keep one", field)
	case c.SecretFile != "" && c.SecretEnv != "":
		return fmt.Errorf("%s: secret_file and secret_env are exclusive: keep one", field)
	case c.MaxBytes < 0 || (c.MaxBytes > 0 && c.MaxBytes < 2000):
		return fmt.Errorf("%s.max_bytes is %d: use 0 (default 20000) or at least 2000", field, c.MaxBytes)
	}
	if c.URL != "" {
		if _, err := Endpoint(c.URL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
	}
	if _, err := template.ParseLanguage(c.Language); err != nil {
		return fmt.Errorf("%s.language: %w", field, err)
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			return fmt.Errorf("%s.timezone %q is unknown: use an IANA name such as Asia/Shanghai", field, c.Timezone)
		}
	}
	return nil
}

// Endpoint checks a webhook URL. Errors never repeat it.
func Endpoint(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("is not an http(s) URL")
	}
	return u, nil
}

func (c Config) secrets() (*url.URL, string, error) {
	raw := c.URL
	if raw == "" {
		var err error
		if raw, err = natsconn.Secret("webhook.url", c.URLFile, c.URLEnv); err != nil {
			return nil, "", err
		}
	}
	u, err := Endpoint(raw)
	if err != nil {
		return nil, "", fmt.Errorf("webhook url %w", err)
	}
	secret, err := natsconn.Secret("webhook.secret", c.SecretFile, c.SecretEnv)
	if err != nil {
		return nil, "", err
	}
	return u, secret, nil
}
