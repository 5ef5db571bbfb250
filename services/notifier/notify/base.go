package notify

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// JSON is the Content-Type of a JSON request body.
const JSON = "application/json"

// Source is the part of a channel's config that every channel reads the
// same way: where the webhook URL and the signing secret come from, and
// the locale and links of the messages. A channel's Config fills one in
// for Validate and NewBase; what only that channel has (message type,
// mentions, its own limits) it checks itself.
type Source struct {
	// Channel prefixes errors that are not about one field
	// ("dingtalk url …"); it is also the channel of the Base.
	Channel string
	// Target names what the URL is, for the empty-URL error ("the
	// robot's webhook URL").
	Target string
	// URL, URLFile and URLEnv are the exclusive sources of the webhook
	// URL (or bare token).
	URL, URLFile, URLEnv string
	// DefaultBaseURL is where a bare token goes; set only by channels
	// that accept a bare token, whose config has a base_url. BaseURL is
	// the configured one (empty: the default).
	DefaultBaseURL, BaseURL string
	// SecretFile and SecretEnv are the exclusive sources of the signing
	// secret (neither: no signing, or a channel without one).
	SecretFile, SecretEnv string
	// Keyword, Language, Timezone and LinkBaseURL configure the templates;
	// DefaultLanguage is the language when Language is empty.
	Keyword, Language, Timezone, LinkBaseURL string
	DefaultLanguage                          template.Language
	// Endpoint turns the raw URL (or bare token) into the endpoint. Its
	// errors never repeat raw.
	Endpoint func(raw string) (*url.URL, error)
}

// Validate checks the shared settings without reading secrets; field is
// the config path of the channel's section. The checks run in the order
// users fix them: the URL source, base_url, the URL itself, the secret
// source, the locale, the link base URL.
func (s Source) Validate(field string) error {
	if err := CheckURLSource(field, s.Target, s.URL, s.URLFile, s.URLEnv); err != nil {
		return err
	}
	if s.DefaultBaseURL != "" {
		if err := CheckBaseURL(field, s.BaseURL, s.DefaultBaseURL); err != nil {
			return err
		}
	}
	if s.URL != "" {
		if _, err := s.Endpoint(s.URL); err != nil {
			return fmt.Errorf("%s.url: %w", field, err)
		}
	}
	if err := CheckSecretSource(field, s.SecretFile, s.SecretEnv); err != nil {
		return err
	}
	if err := CheckLocale(field, s.Language, s.Timezone); err != nil {
		return err
	}
	return CheckLinkBaseURL(field, s.LinkBaseURL)
}

// Base is what every channel's Notifier holds: the resolved endpoint and
// secret, the templates, the HTTP client and the clock. A Notifier keeps
// it in an unexported field: the endpoint and the secret are secrets.
type Base struct {
	// Channel is the channel's name (dingtalk, feishu, …), used in errors.
	Channel string
	// Endpoint is the webhook URL without any per-attempt signature.
	Endpoint *url.URL
	// Secret is the signing secret ("" when none is configured).
	Secret string
	// Template renders the messages in the configured locale.
	Template *template.Template
	// Client sends the requests.
	Client *http.Client
	// Now is the clock signatures are computed with.
	Now func() time.Time
}

// NewBase checks the channel's config with validate (its Validate, which
// checks the Source and the channel's own settings; the field is the
// channel's name), reads the URL and the secret and prepares the
// templates. A nil client is http.DefaultClient, a nil now is time.Now.
func NewBase(validate func(field string) error, s Source, client *http.Client, now func() time.Time) (Base, error) {
	if err := validate(s.Channel); err != nil {
		return Base{}, err
	}
	endpoint, err := ResolveURL(s.Channel, s.URL, s.URLFile, s.URLEnv, s.Endpoint)
	if err != nil {
		return Base{}, err
	}
	secret, err := ReadSecret(s.Channel, s.SecretFile, s.SecretEnv)
	if err != nil {
		return Base{}, err
	}
	tmpl, err := NewTemplate(s.Language, s.DefaultLanguage, s.Keyword, s.Timezone, s.LinkBaseURL)
	if err != nil {
		return Base{}, err
	}
	if client == nil {
		client = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	return Base{Channel: s.Channel, Endpoint: endpoint, Secret: secret, Template: tmpl, Client: client, Now: now}, nil
}

// Classifier turns a remote's answer (status, headers, bounded body) into
// a Result; every channel's Classify has this shape once configured.
type Classifier func(status int, header http.Header, body []byte) Result

// Post sends payload to u with header as one attempt and classifies the
// answer (see Attempt).
func (b Base) Post(ctx context.Context, u string, header http.Header, payload []byte, classify Classifier) Result {
	return Attempt(ctx, b.Client, u, header, payload, func(resp Response) Result {
		return classify(resp.Status, resp.Header, resp.Body)
	})
}

// PostJSON sends a JSON payload to the endpoint as one attempt and
// classifies the answer.
func (b Base) PostJSON(ctx context.Context, payload []byte, classify Classifier) Result {
	return b.Post(ctx, b.Endpoint.String(), http.Header{"Content-Type": {JSON}}, payload, classify)
}

// Deliver finishes a Send: a payload that failed to render (renderErr) is
// a permanent RenderFailure, otherwise send posts it. The error is nil
// exactly when the result is delivered.
func (b Base) Deliver(payload []byte, renderErr error, send func(payload []byte) Result) (Result, error) {
	var r Result
	if renderErr != nil {
		r = RenderFailure(renderErr)
	} else {
		r = send(payload)
	}
	return r, r.Err(b.Channel)
}
