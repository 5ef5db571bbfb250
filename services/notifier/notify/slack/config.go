package slack

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
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

// Validate checks the settings without reading secrets.
func (c Config) Validate(field string) error {
	if err := notify.CheckURLSource(field, "the incoming webhook URL", c.URL, c.URLFile, c.URLEnv); err != nil {
		return err
	}
	if c.URL != "" {
		if _, err := Endpoint(c.URL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
	}
	if err := notify.CheckLocale(field, c.Language, c.Timezone); err != nil {
		return err
	}
	if err := notify.CheckLinkBaseURL(field, c.LinkBaseURL); err != nil {
		return err
	}
	for i, u := range c.MentionUserIDs {
		if u == "" || strings.ContainsAny(u, " <>@|") {
			return fmt.Errorf("%s.mention_user_ids[%d] %q is not a Slack user id: use the U… id", field, i, u)
		}
	}
	return nil
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

func (c Config) endpoint() (*url.URL, error) {
	return notify.ResolveURL(Name, c.URL, c.URLFile, c.URLEnv, Endpoint)
}
