package dingtalk

import (
	"fmt"
	"net/url"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// DefaultBaseURL is where a bare access token is sent.
const DefaultBaseURL = "https://oapi.dingtalk.com/robot/send"

// Message types (DingTalk's msgtype values).
const (
	MsgMarkdown   = "markdown"
	MsgText       = "text"
	MsgActionCard = "actionCard"
)

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
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to (alert, device, alert list); empty: no links. The notifier's
	// link_base_url is the default.
	LinkBaseURL string `yaml:"link_base_url"`
	// AtMobiles and AtUserIDs are mentioned in every message ("@…" is
	// also written into the text, or DingTalk would not notify them).
	AtMobiles []string `yaml:"at_mobiles"`
	AtUserIDs []string `yaml:"at_user_ids"`
	// AtAll mentions everyone in the group.
	AtAll bool `yaml:"at_all"`
	// MsgType is markdown (default: coloured heading, links), text (plain
	// text, links as URLs) or actionCard (markdown with buttons to the
	// alert and device views; needs link_base_url, mentions nobody).
	MsgType string `yaml:"msg_type"`
}

// source is the part of the config every channel shares.
func (c Config) source() notify.Source {
	return notify.Source{
		Channel: Name, Target: "the robot's webhook URL",
		URL: c.URL, URLFile: c.URLFile, URLEnv: c.URLEnv, DefaultBaseURL: DefaultBaseURL, BaseURL: c.BaseURL,
		SecretFile: c.SecretFile, SecretEnv: c.SecretEnv,
		Keyword: c.Keyword, Language: c.Language, Timezone: c.Timezone, LinkBaseURL: c.LinkBaseURL, DefaultLanguage: template.Chinese,
		Endpoint: func(raw string) (*url.URL, error) { return Endpoint(raw, c.BaseURL) },
	}
}

// Validate checks the settings without reading secrets; field is the
// config path of this section (e.g. notifier.receivers[0].dingtalk).
func (c Config) Validate(field string) error {
	if err := c.source().Validate(field); err != nil {
		return err
	}
	switch c.MsgType {
	case "", MsgMarkdown, MsgText:
	case MsgActionCard:
		if c.LinkBaseURL == "" {
			return fmt.Errorf("%s: msg_type actionCard needs link_base_url (its buttons open the alert in fleetwatch): set notifier.link_base_url or %s.link_base_url, or use msg_type markdown", field, field)
		}
		if len(c.AtMobiles) > 0 || len(c.AtUserIDs) > 0 || c.AtAll {
			return fmt.Errorf("%s: DingTalk's actionCard notifies nobody it mentions: remove at_mobiles, at_user_ids and at_all, or use msg_type markdown or text", field)
		}
	default:
		return fmt.Errorf("%s.msg_type is %q: use markdown, text or actionCard", field, c.MsgType)
	}
	if err := notify.CheckIDs(field, "at_mobiles", c.AtMobiles, " @", "a phone number", "write it without @ or spaces"); err != nil {
		return err
	}
	return notify.CheckIDs(field, "at_user_ids", c.AtUserIDs, " @", "a user id", "write it without @ or spaces")
}

// accessToken is how the robot's URL carries its access token.
var accessToken = notify.TokenQuery{
	DefaultBaseURL: DefaultBaseURL, Param: "access_token", Noun: "access token", Owner: "robot",
	Missing: "has no access_token parameter: paste the robot's whole webhook URL (…/robot/send?access_token=…)",
}

// Endpoint turns a webhook URL or a bare access token into the robot's
// URL without timestamp and sign. Errors never repeat the token.
func Endpoint(raw, base string) (*url.URL, error) {
	u, err := accessToken.Endpoint(raw, base)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	// A pasted URL that was signed once must not carry a stale signature.
	q.Del("timestamp")
	q.Del("sign")
	u.RawQuery = q.Encode()
	return u, nil
}
