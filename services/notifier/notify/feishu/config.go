package feishu

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
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

// source is the part of the config every channel shares.
func (c Config) source() notify.Source {
	return notify.Source{
		Channel: Name, Target: "the bot's webhook URL",
		URL: c.URL, URLFile: c.URLFile, URLEnv: c.URLEnv, DefaultBaseURL: DefaultBaseURL, BaseURL: c.BaseURL,
		SecretFile: c.SecretFile, SecretEnv: c.SecretEnv,
		Keyword: c.Keyword, Language: c.Language, Timezone: c.Timezone, LinkBaseURL: c.LinkBaseURL, DefaultLanguage: template.Chinese,
		Endpoint: func(raw string) (*url.URL, error) { return Endpoint(raw, c.BaseURL) },
	}
}

// Validate checks the settings without reading secrets; field is the
// config path of this section.
func (c Config) Validate(field string) error {
	if err := c.source().Validate(field); err != nil {
		return err
	}
	switch c.MsgType {
	case "", MsgInteractive, MsgPost, MsgText:
	default:
		return fmt.Errorf("%s.msg_type is %q: use interactive, post or text", field, c.MsgType)
	}
	return notify.CheckIDs(field, "mention_user_ids", c.MentionUserIDs, " <>\"", "a user id", "use the open_id (ou_…)")
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
