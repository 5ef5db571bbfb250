package wecom

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
)

// DefaultBaseURL is where a bare robot key is sent.
const DefaultBaseURL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"

// Message types.
const (
	MsgMarkdown = "markdown"
	MsgText     = "text"
)

// Config configures one WeCom group robot.
type Config struct {
	// URL is the robot's whole webhook URL (…/cgi-bin/webhook/send?key=…)
	// or the bare key. The key is a secret: prefer URLFile or URLEnv.
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	URLEnv  string `yaml:"url_env"`
	// BaseURL is where a bare key is sent (default DefaultBaseURL).
	BaseURL string `yaml:"base_url"`
	// MsgType is markdown (default; 4096 bytes, <@userid> mentions) or
	// text (2048 bytes, mentions by user id or mobile, @all).
	MsgType string `yaml:"msg_type"`
	// Keyword goes into every message's envelope (WeCom has no keyword
	// security; it keeps messages recognisable and filterable).
	Keyword string `yaml:"keyword"`
	// Language of the messages: zh (default) or en.
	Language string `yaml:"language"`
	// Timezone renders times, e.g. Asia/Shanghai (default: the host's).
	Timezone string `yaml:"timezone"`
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to (alert, device, alert list); empty: no links. The notifier's
	// link_base_url is the default.
	LinkBaseURL string `yaml:"link_base_url"`
	// MentionUserIDs are mentioned in every message.
	MentionUserIDs []string `yaml:"mention_user_ids"`
	// MentionMobiles and MentionAll work with msg_type text only.
	MentionMobiles []string `yaml:"mention_mobiles"`
	MentionAll     bool     `yaml:"mention_all"`
}

// Validate checks the settings without reading secrets; field is the
// config path of this section.
func (c Config) Validate(field string) error {
	if err := notify.CheckURLSource(field, "the robot's webhook URL", c.URL, c.URLFile, c.URLEnv); err != nil {
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
	switch c.MsgType {
	case "", MsgMarkdown:
		if len(c.MentionMobiles) > 0 || c.MentionAll {
			return fmt.Errorf("%s: mention_mobiles and mention_all need msg_type text (WeCom markdown mentions user ids only)", field)
		}
	case MsgText:
	default:
		return fmt.Errorf("%s.msg_type is %q: use markdown or text", field, c.MsgType)
	}
	if err := notify.CheckLocale(field, c.Language, c.Timezone); err != nil {
		return err
	}
	if err := notify.CheckLinkBaseURL(field, c.LinkBaseURL); err != nil {
		return err
	}
	for i, u := range c.MentionUserIDs {
		if u == "" || strings.ContainsAny(u, " <>@") {
			return fmt.Errorf("%s.mention_user_ids[%d] %q is not a user id: write it without @, < or spaces", field, i, u)
		}
	}
	for i, m := range c.MentionMobiles {
		if m == "" || strings.ContainsAny(m, " @") {
			return fmt.Errorf("%s.mention_mobiles[%d] %q is not a phone number: write it without @ or spaces", field, i, m)
		}
	}
	return nil
}

// Endpoint turns a webhook URL or a bare key into the robot's URL. Errors
// never repeat the key.
func Endpoint(raw, base string) (*url.URL, error) {
	if base == "" {
		base = DefaultBaseURL
	}
	u, token, err := notify.ParseWebhook(raw, "key", "robot")
	if err != nil {
		return nil, err
	}
	if u == nil {
		return notify.TokenQueryURL(base, "key", token)
	}
	if u.Query().Get("key") == "" {
		return nil, errors.New("has no key parameter: paste the robot's whole webhook URL (…/cgi-bin/webhook/send?key=…)")
	}
	return u, nil
}

func (c Config) endpoint() (*url.URL, error) {
	return notify.ResolveURL(Name, c.URL, c.URLFile, c.URLEnv, func(raw string) (*url.URL, error) { return Endpoint(raw, c.BaseURL) })
}
