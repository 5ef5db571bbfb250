package wecom

import (
	"fmt"
	"net/url"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
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

// source is the part of the config every channel shares.
func (c Config) source() notify.Source {
	return notify.Source{
		Channel: Name, Target: "the robot's webhook URL",
		URL: c.URL, URLFile: c.URLFile, URLEnv: c.URLEnv, DefaultBaseURL: DefaultBaseURL, BaseURL: c.BaseURL,
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
	case "", MsgMarkdown:
		if len(c.MentionMobiles) > 0 || c.MentionAll {
			return fmt.Errorf("%s: mention_mobiles and mention_all need msg_type text (WeCom markdown mentions user ids only)", field)
		}
	case MsgText:
	default:
		return fmt.Errorf("%s.msg_type is %q: use markdown or text", field, c.MsgType)
	}
	if err := notify.CheckIDs(field, "mention_user_ids", c.MentionUserIDs, " <>@", "a user id", "write it without @, < or spaces"); err != nil {
		return err
	}
	return notify.CheckIDs(field, "mention_mobiles", c.MentionMobiles, " @", "a phone number", "write it without @ or spaces")
}

// Endpoint turns a webhook URL or a bare key into the robot's URL. Errors
// never repeat the key.
func Endpoint(raw, base string) (*url.URL, error) {
	return notify.TokenQuery{
		DefaultBaseURL: DefaultBaseURL, Param: "key", Noun: "key", Owner: "robot",
		Missing: "has no key parameter: paste the robot's whole webhook URL (…/cgi-bin/webhook/send?key=…)",
	}.Endpoint(raw, base)
}
