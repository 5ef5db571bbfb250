package slack

import (
	"errors"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Config configures one Slack incoming webhook.
type Config struct {
	// URL is the whole incoming-webhook URL
	// (https://hooks.slack.com/services/T…/B…/…). It is a secret: prefer
	// URLFile or URLEnv.
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	URLEnv  string `yaml:"url_env"`
	// Keyword goes into every message's envelope.
	Keyword string `yaml:"keyword"`
	// Language of the messages: zh or en (default en for Slack).
	Language string `yaml:"language"`
	// Timezone renders times (default: the host's).
	Timezone string `yaml:"timezone"`
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to (alert, device, alert list); empty: no links. The notifier's
	// link_base_url is the default.
	LinkBaseURL string `yaml:"link_base_url"`
	// MentionUserIDs (U…) are mentioned in every message.
	MentionUserIDs []string `yaml:"mention_user_ids"`
	// MentionChannel notifies the whole channel (<!channel>).
	MentionChannel bool `yaml:"mention_channel"`
}

// source is the part of the config every channel shares.
func (c Config) source() notify.Source {
	return notify.Source{
		Channel: Name, Target: "the incoming webhook URL",
		URL: c.URL, URLFile: c.URLFile, URLEnv: c.URLEnv,
		Keyword: c.Keyword, Language: c.Language, Timezone: c.Timezone, LinkBaseURL: c.LinkBaseURL, DefaultLanguage: template.English,
		Endpoint: Endpoint,
	}
}

// Validate checks the settings without reading secrets.
func (c Config) Validate(field string) error {
	if err := c.source().Validate(field); err != nil {
		return err
	}
	return notify.CheckIDs(field, "mention_user_ids", c.MentionUserIDs, " <>@|", "a Slack user id", "use the U… id")
}

// Endpoint checks an incoming-webhook URL. Errors never repeat it.
func Endpoint(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || !strings.Contains(raw, "://") {
		return nil, errors.New("is not a URL: paste the whole incoming webhook URL (https://hooks.slack.com/services/…)")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("is not an http(s) URL: paste the whole incoming webhook URL")
	}
	i := strings.Index(u.Path, "/services/")
	if i < 0 || len(u.Path) == i+len("/services/") {
		return nil, errors.New("is not an incoming webhook URL (…/services/T…/B…/…): paste the whole URL")
	}
	return u, nil
}
