package notify

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// CheckURLSource checks that exactly one of url, url_file and url_env is
// set; target names what the URL is (e.g. "the robot's webhook URL").
func CheckURLSource(field, target, u, file, env string) error {
	n := 0
	for _, s := range []string{u, file, env} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Errorf("%s.url is empty: set url_env (or url_file, or url) to %s", field, target)
	case n > 1:
		return fmt.Errorf("%s: url, url_file and url_env are exclusive: keep one", field)
	}
	return nil
}

// CheckBaseURL checks an optional base_url; example is the default shown
// in the error.
func CheckBaseURL(field, base, example string) error {
	if base == "" {
		return nil
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s.base_url %q is not an http(s) URL: use e.g. %s", field, base, example)
	}
	return nil
}

// CheckLinkBaseURL checks an optional link_base_url, the root of the
// fleetwatch views messages link to.
func CheckLinkBaseURL(field, base string) error {
	if base == "" {
		return nil
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s.link_base_url %q is not an http(s) URL without query: use e.g. https://fleet.example.com", field, base)
	}
	return nil
}

// CheckSecretSource checks that secret_file and secret_env are not both set.
func CheckSecretSource(field, file, env string) error {
	if file != "" && env != "" {
		return fmt.Errorf("%s: secret_file and secret_env are exclusive: keep one", field)
	}
	return nil
}

// CheckLocale checks the language (empty: the channel's default) and the
// optional IANA timezone.
func CheckLocale(field, language, timezone string) error {
	if _, err := template.ParseLanguage(language); err != nil {
		return fmt.Errorf("%s.language: %w", field, err)
	}
	if timezone != "" {
		if _, err := time.LoadLocation(timezone); err != nil {
			return fmt.Errorf("%s.timezone %q is unknown: use an IANA name such as Asia/Shanghai", field, timezone)
		}
	}
	return nil
}

// ResolveURL reads the webhook URL (or bare token) from u, or else from
// url_file/url_env, and turns it into the endpoint with parse. channel
// prefixes errors ("dingtalk url …"), which never repeat the URL.
func ResolveURL(channel, u, file, env string, parse func(raw string) (*url.URL, error)) (*url.URL, error) {
	raw := u
	if raw == "" {
		var err error
		if raw, err = natsconn.Secret(channel+".url", file, env); err != nil {
			return nil, err
		}
	}
	endpoint, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s url %w", channel, err)
	}
	return endpoint, nil
}

// ReadSecret reads the channel's signing secret from secret_file or
// secret_env ("" when neither is set).
func ReadSecret(channel, file, env string) (string, error) {
	return natsconn.Secret(channel+".secret", file, env)
}

// NewTemplate prepares the templates of a receiver: language (empty:
// def), keyword, timezone (empty: the host's), as validated by
// CheckLocale, and the link base URL (empty: no links).
func NewTemplate(language string, def template.Language, keyword, timezone, linkBase string) (*template.Template, error) {
	lang := def
	if language != "" {
		lang, _ = template.ParseLanguage(language)
	}
	loc := time.Local
	if timezone != "" {
		loc, _ = time.LoadLocation(timezone)
	}
	return template.New(template.Options{Language: lang, Keyword: keyword, Location: loc, LinkBaseURL: linkBase})
}

// ParseWebhook parses a pasted webhook URL, or returns a bare token (raw
// without "://") with a nil URL for the channel to place. noun names the
// token ("access token", "key"), owner the webhook's owner ("robot",
// "bot"). Errors never repeat raw.
func ParseWebhook(raw, noun, owner string) (*url.URL, string, error) {
	raw = strings.TrimSpace(raw)
	if !strings.Contains(raw, "://") {
		if raw == "" || strings.ContainsAny(raw, "/?&=# \t") {
			return nil, "", fmt.Errorf("is neither a webhook URL nor a bare %s: paste the %s's whole webhook URL", noun, owner)
		}
		return nil, raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("is not a valid URL: paste the %s's whole webhook URL", owner)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("is not an http(s) URL: paste the %s's whole webhook URL", owner)
	}
	return u, "", nil
}

// TokenQueryURL is base with the bare token in the query parameter param.
func TokenQueryURL(base, param, token string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, errors.New("base_url is not a URL")
	}
	q := u.Query()
	q.Set(param, token)
	u.RawQuery = q.Encode()
	return u, nil
}

// CheckIDs checks a list of ids to mention: none may be empty or contain
// one of forbidden. key is the setting (at_mobiles), what names an id ("a
// phone number") and fix says how to write one.
func CheckIDs(field, key string, ids []string, forbidden, what, fix string) error {
	for i, id := range ids {
		if id == "" || strings.ContainsAny(id, forbidden) {
			return fmt.Errorf("%s.%s[%d] %q is not %s: %s", field, key, i, id, what, fix)
		}
	}
	return nil
}

// TokenQuery describes a webhook whose token is a query parameter of its
// URL (DingTalk's access_token, WeCom's key).
type TokenQuery struct {
	// DefaultBaseURL is where a bare token is sent.
	DefaultBaseURL string
	// Param is the query parameter that holds the token.
	Param string
	// Noun names the token ("access token"), Owner the webhook's owner
	// ("robot"), both for errors.
	Noun, Owner string
	// Missing is the error of a pasted URL without Param.
	Missing string
}

// Endpoint turns a pasted webhook URL, or a bare token sent to base
// (empty: DefaultBaseURL), into the endpoint. Errors never repeat raw.
func (t TokenQuery) Endpoint(raw, base string) (*url.URL, error) {
	if base == "" {
		base = t.DefaultBaseURL
	}
	u, token, err := ParseWebhook(raw, t.Noun, t.Owner)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return TokenQueryURL(base, t.Param, token)
	}
	if u.Query().Get(t.Param) == "" {
		return nil, errors.New(t.Missing)
	}
	return u, nil
}
