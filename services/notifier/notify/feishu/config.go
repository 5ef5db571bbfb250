package feishu

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
)

// DefaultBaseURL is where a bare hook token is sent (Lark:
// https://open.larksuite.com/open-apis/bot/v2/hook/).
const DefaultBaseURL = "https://open.feishu.cn/open-apis/bot/v2/hook/"

// hookPath is the path of every custom bot webhook.
const hookPath = "/open-apis/bot/v2/hook/"

// Message types (Feishu's msg_type values).
const (
	MsgInteractive = "interactive"
	MsgPost        = "post"
	MsgText        = "text"
)

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
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to (alert, device, alert list); empty: no links. The notifier's
	// link_base_url is the default.
	LinkBaseURL string `yaml:"link_base_url"`
	// MentionAll mentions everyone (<at id=all></at>).
	MentionAll bool `yaml:"mention_all"`
	// MentionUserIDs are open_ids/user_ids mentioned in every message.
	MentionUserIDs []string `yaml:"mention_user_ids"`
	// MsgType is interactive (default: a card with the header coloured by
	// severity and buttons to the fleetwatch views), post (rich text with
	// links) or text.
	MsgType string `yaml:"msg_type"`
}

// Validate checks the settings without reading secrets; field is the
// config path of this section.
func (c Config) Validate(field string) error {
	if err := notify.CheckURLSource(field, "the bot's webhook URL", c.URL, c.URLFile, c.URLEnv); err != nil {
		return err
	}
	if err := notify.CheckBaseURL(field, c.BaseURL, DefaultBaseURL); err != nil {
		return err
	}
	if c.URL != "" {
		if _, err := Endpoint(c.URL, c.BaseURL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
	}
	if err := notify.CheckSecretSource(field, c.SecretFile, c.SecretEnv); err != nil {
		return err
	}
	if err := notify.CheckLocale(field, c.Language, c.Timezone); err != nil {
		return err
	}
	if err := notify.CheckLinkBaseURL(field, c.LinkBaseURL); err != nil {
		return err
	}
	switch c.MsgType {
	case "", MsgInteractive, MsgPost, MsgText:
	default:
		return fmt.Errorf("%s.msg_type is %q: use interactive, post or text", field, c.MsgType)
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
	if base == "" {
		base = DefaultBaseURL
	}
	u, token, err := notify.ParseWebhook(raw, "hook token", "bot")
	if err != nil {
		return nil, err
	}
	if u == nil {
		u, err := url.Parse(strings.TrimRight(base, "/") + "/" + token)
		if err != nil || u.Host == "" {
			return nil, errors.New("base_url is not a URL")
		}
		return u, nil
	}
	i := strings.Index(u.Path, hookPath)
	if i < 0 || len(u.Path) == i+len(hookPath) || strings.Contains(u.Path[i+len(hookPath):], "/") {
		return nil, errors.New("is not a custom bot webhook (…/open-apis/bot/v2/hook/<token>): paste the bot's whole webhook URL")
	}
	return u, nil
}

func (c Config) secrets() (endpoint *url.URL, secret string, err error) {
	if endpoint, err = notify.ResolveURL(Name, c.URL, c.URLFile, c.URLEnv, func(raw string) (*url.URL, error) { return Endpoint(raw, c.BaseURL) }); err != nil {
		return nil, "", err
	}
	if secret, err = notify.ReadSecret(Name, c.SecretFile, c.SecretEnv); err != nil {
		return nil, "", err
	}
	return endpoint, secret, nil
}
