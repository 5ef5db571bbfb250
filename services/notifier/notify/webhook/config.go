package webhook

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
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
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to (alert, device, alert list); empty: no links. The notifier's
	// link_base_url is the default.
	LinkBaseURL string `yaml:"link_base_url"`
	// MaxBytes is the body budget (default 20000).
	MaxBytes int `yaml:"max_bytes"`
}

// source is the part of the config every channel shares.
func (c Config) source() notify.Source {
	return notify.Source{
		Channel: Name, Target: "the endpoint's URL",
		URL: c.URL, URLFile: c.URLFile, URLEnv: c.URLEnv,
		SecretFile: c.SecretFile, SecretEnv: c.SecretEnv,
		Keyword: c.Keyword, Language: c.Language, Timezone: c.Timezone, LinkBaseURL: c.LinkBaseURL, DefaultLanguage: template.Chinese,
		Endpoint: Endpoint,
	}
}

// Validate checks the settings without reading secrets.
func (c Config) Validate(field string) error {
	if err := c.source().Validate(field); err != nil {
		return err
	}
	if c.MaxBytes < 0 || (c.MaxBytes > 0 && c.MaxBytes < 2000) {
		return fmt.Errorf("%s.max_bytes is %d: use 0 (default 20000) or at least 2000", field, c.MaxBytes)
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
