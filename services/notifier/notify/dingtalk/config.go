package dingtalk

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// DefaultBaseURL is where a bare access token is sent.
const DefaultBaseURL = "https://oapi.dingtalk.com/robot/send"

// Config configures one DingTalk custom robot.
type Config struct {
	// URL is the robot's whole webhook URL as DingTalk shows it
	// (https://oapi.dingtalk.com/robot/send?access_token=…) or the bare
	// access token. The token is a secret: prefer URLFile or URLEnv.
	URL string `yaml:"url"`
	// URLFile and URLEnv read the URL (or token) from a file or an
	// environment variable.
	URLFile string `yaml:"url_file"`
	URLEnv  string `yaml:"url_env"`
	// BaseURL is where a bare token is sent (default DefaultBaseURL); a
	// local stand-in sets its own.
	BaseURL string `yaml:"base_url"`
	// SecretFile or SecretEnv hold the robot's signing secret, verbatim
	// with its SEC prefix. Neither: the robot does not sign.
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// Keyword is one of the robot's security keywords; every message
	// carries it.
	Keyword string `yaml:"keyword"`
	// Language of the messages: zh (default) or en.
	Language string `yaml:"language"`
	// Timezone renders times, e.g. Asia/Shanghai (default: the host's).
	Timezone string `yaml:"timezone"`
	// AtMobiles and AtUserIDs are mentioned in every message ("@…" is
	// also written into the text, or DingTalk would not notify them).
	AtMobiles []string `yaml:"at_mobiles"`
	AtUserIDs []string `yaml:"at_user_ids"`
	// AtAll mentions everyone in the group.
	AtAll bool `yaml:"at_all"`
}

// Validate checks the settings without reading secrets; field is the
// config path of this section (e.g. notifier.receivers[0].dingtalk).
func (c Config) Validate(field string) error {
	n := 0
	for _, s := range []string{c.URL, c.URLFile, c.URLEnv} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Errorf("%s.url is empty: set url_env (or url_file, or url) to the robot's webhook URL", field)
	case n > 1:
		return fmt.Errorf("%s: url, url_file and url_env are exclusive: keep one", field)
	}
	if c.BaseURL != "" {
		if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s.base_url %q is not an http(s) URL: use e.g. %s", field, c.BaseURL, DefaultBaseURL)
		}
	}
	if c.URL != "" {
		if _, err := Endpoint(c.URL, c.BaseURL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
	}
	if c.SecretFile != "" && c.SecretEnv != "" {
		return fmt.Errorf("%s: secret_file and secret_env are exclusive: keep one", field)
	}
	if _, err := template.ParseLanguage(c.Language); err != nil {
		return fmt.Errorf("%s.language: %w", field, err)
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			return fmt.Errorf("%s.timezone %q is unknown: use an IANA name such as Asia/Shanghai", field, c.Timezone)
		}
	}
	for i, m := range c.AtMobiles {
		if m == "" || strings.ContainsAny(m, " @") {
			return fmt.Errorf("%s.at_mobiles[%d] %q is not a phone number: write it without @ or spaces", field, i, m)
		}
	}
	for i, u := range c.AtUserIDs {
		if u == "" || strings.ContainsAny(u, " @") {
			return fmt.Errorf("%s.at_user_ids[%d] %q is not a user id: write it without @ or spaces", field, i, u)
		}
	}
	return nil
}

// Endpoint turns a webhook URL or a bare access token into the robot's
// URL without timestamp and sign. Errors never repeat the token.
func Endpoint(raw, base string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.Contains(raw, "://") {
		if raw == "" || strings.ContainsAny(raw, "/?&=# \t") {
			return nil, errors.New("is neither a webhook URL nor a bare access token: paste the robot's whole webhook URL")
		}
		u, err := url.Parse(base)
		if err != nil || u.Host == "" {
			return nil, errors.New("base_url is not a URL")
		}
		q := u.Query()
		q.Set("access_token", raw)
		u.RawQuery = q.Encode()
		return u, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("is not a valid URL: paste the robot's whole webhook URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("is not an http(s) URL: paste the robot's whole webhook URL")
	}
	q := u.Query()
	if q.Get("access_token") == "" {
		return nil, errors.New("has no access_token parameter: paste the robot's whole webhook URL (…/robot/send?access_token=…)")
	}
	// A pasted URL that was signed once must not carry a stale signature.
	q.Del("timestamp")
	q.Del("sign")
	u.RawQuery = q.Encode()
	return u, nil
}

// secrets reads the URL and the signing secret.
func (c Config) secrets() (endpoint *url.URL, secret string, err error) {
	raw := c.URL
	if raw == "" {
		if raw, err = natsconn.Secret("dingtalk.url", c.URLFile, c.URLEnv); err != nil {
			return nil, "", err
		}
	}
	if endpoint, err = Endpoint(raw, c.BaseURL); err != nil {
		return nil, "", fmt.Errorf("dingtalk url %w", err)
	}
	if secret, err = natsconn.Secret("dingtalk.secret", c.SecretFile, c.SecretEnv); err != nil {
		return nil, "", err
	}
	if secret != "" && !strings.HasPrefix(secret, "SEC") {
		return nil, "", errors.New("dingtalk secret does not start with SEC: paste the robot's whole secret, prefix included")
	}
	return endpoint, secret, nil
}
