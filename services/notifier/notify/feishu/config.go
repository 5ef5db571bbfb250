package feishu

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// DefaultBaseURL is where a bare hook token is sent (Lark:
// https://open.larksuite.com/open-apis/bot/v2/hook/).
const DefaultBaseURL = "https://open.feishu.cn/open-apis/bot/v2/hook/"

// hookPath is the path of every custom bot webhook.
const hookPath = "/open-apis/bot/v2/hook/"

// Config configures one Feishu (or Lark) custom bot.
type Config struct {
	// URL is the bot's whole webhook URL
	// (https://open.feishu.cn/open-apis/bot/v2/hook/…) or the bare hook
	// token. The token is a secret: prefer URLFile or URLEnv.
	URL string `yaml:"url"`
	// URLFile and URLEnv read the URL (or token) from a file or an
	// environment variable.
	URLFile string `yaml:"url_file"`
	URLEnv  string `yaml:"url_env"`
	// BaseURL is where a bare token is sent (default DefaultBaseURL).
	BaseURL string `yaml:"base_url"`
	// SecretFile or SecretEnv hold the bot's signing secret, verbatim.
	// Neither: the bot does not sign.
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// Keyword is one of the bot's security keywords; every message
	// carries it.
	Keyword string `yaml:"keyword"`
	// Language of the messages: zh (default) or en.
	Language string `yaml:"language"`
	// Timezone renders times, e.g. Asia/Shanghai (default: the host's).
	Timezone string `yaml:"timezone"`
	// MentionAll mentions everyone (<at id=all></at>).
	MentionAll bool `yaml:"mention_all"`
	// MentionUserIDs are open_ids/user_ids mentioned in every message.
	MentionUserIDs []string `yaml:"mention_user_ids"`
}

// Validate checks the settings without reading secrets; field is the
// config path of this section.
func (c Config) Validate(field string) error {
	n := 0
	for _, s := range []string{c.URL, c.URLFile, c.URLEnv} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Errorf("%s.url is empty: set url_env (or url_file, or url) to the bot's webhook URL", field)
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
	for i, u := range c.MentionUserIDs {
		if u == "" || strings.ContainsAny(u, " <>\"") {
			return fmt.Errorf("%s.mention_user_ids[%d] %q is not a user id: use the open_id (ou_…)", field, i, u)
		}
	}
	return nil
}

// Endpoint turns a webhook URL or a bare hook token into the bot's URL.
// Errors never repeat the token.
func Endpoint(raw, base string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.Contains(raw, "://") {
		if raw == "" || strings.ContainsAny(raw, "/?&=# \t") {
			return nil, errors.New("is neither a webhook URL nor a bare hook token: paste the bot's whole webhook URL")
		}
		u, err := url.Parse(strings.TrimRight(base, "/") + "/" + raw)
		if err != nil || u.Host == "" {
			return nil, errors.New("base_url is not a URL")
		}
		return u, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("is not a valid URL: paste the bot's whole webhook URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("is not an http(s) URL: paste the bot's whole webhook URL")
	}
	i := strings.Index(u.Path, hookPath)
	if i < 0 || len(u.Path) == i+len(hookPath) || strings.Contains(u.Path[i+len(hookPath):], "/") {
		return nil, errors.New("is not a custom bot webhook (…/open-apis/bot/v2/hook/<token>): paste the bot's whole webhook URL")
	}
	return u, nil
}

func (c Config) secrets() (endpoint *url.URL, secret string, err error) {
	raw := c.URL
	if raw == "" {
		if raw, err = natsconn.Secret("feishu.url", c.URLFile, c.URLEnv); err != nil {
			return nil, "", err
		}
	}
	if endpoint, err = Endpoint(raw, c.BaseURL); err != nil {
		return nil, "", fmt.Errorf("feishu url %w", err)
	}
	if secret, err = natsconn.Secret("feishu.secret", c.SecretFile, c.SecretEnv); err != nil {
		return nil, "", err
	}
	return endpoint, secret, nil
}
