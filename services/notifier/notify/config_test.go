package notify

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestConfigChecks(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"source ok", CheckURLSource("r", "the bot's webhook URL", "", "", "URL_ENV"), ""},
		{"source none", CheckURLSource("r", "the bot's webhook URL", "", "", ""), "r.url is empty: set url_env (or url_file, or url) to the bot's webhook URL"},
		{"source two", CheckURLSource("r", "x", "u", "f", ""), "r: url, url_file and url_env are exclusive: keep one"},
		{"base empty", CheckBaseURL("r", "", "https://e/"), ""},
		{"base ok", CheckBaseURL("r", "http://127.0.0.1:1/send", "https://e/"), ""},
		{"base bad", CheckBaseURL("r", "e/send", "https://e/send"), `r.base_url "e/send" is not an http(s) URL: use e.g. https://e/send`},
		{"secret one", CheckSecretSource("r", "f", ""), ""},
		{"secret two", CheckSecretSource("r", "f", "E"), "r: secret_file and secret_env are exclusive: keep one"},
		{"locale default", CheckLocale("r", "", ""), ""},
		{"locale ok", CheckLocale("r", "en", "Asia/Shanghai"), ""},
		{"language bad", CheckLocale("r", "de", ""), `r.language: language "de" is not supported: use zh or en`},
		{"timezone bad", CheckLocale("r", "zh", "Mars/Base"), `r.timezone "Mars/Base" is unknown: use an IANA name such as Asia/Shanghai`},
		{"links off", CheckLinkBaseURL("r", ""), ""},
		{"links ok", CheckLinkBaseURL("r", "https://fleet.example.com/ui/"), ""},
		{"links relative", CheckLinkBaseURL("r", "fleet.example.com"), `r.link_base_url "fleet.example.com" is not an http(s) URL without query: use e.g. https://fleet.example.com`},
		{"links query", CheckLinkBaseURL("r", "https://f/?a=1"), `r.link_base_url "https://f/?a=1" is not an http(s) URL without query: use e.g. https://fleet.example.com`},
	}
	for _, tt := range tests {
		if got := errText(tt.err); got != tt.want {
			t.Errorf("%s: error %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseWebhook(t *testing.T) {
	tests := []struct {
		raw, url, token, err string
	}{
		{raw: " https://h.example/send?key=k ", url: "https://h.example/send?key=k"},
		{raw: "tok-123", token: "tok-123"},
		{raw: "", err: "is neither a webhook URL nor a bare key: paste the robot's whole webhook URL"},
		{raw: "a b", err: "is neither a webhook URL nor a bare key: paste the robot's whole webhook URL"},
		{raw: "ftp://h/x", err: "is not an http(s) URL: paste the robot's whole webhook URL"},
		{raw: "http://h/%zz", err: "is not a valid URL: paste the robot's whole webhook URL"},
	}
	for _, tt := range tests {
		u, token, err := ParseWebhook(tt.raw, "key", "robot")
		got := ""
		if u != nil {
			got = u.String()
		}
		if errText(err) != tt.err || got != tt.url || token != tt.token {
			t.Errorf("ParseWebhook(%q) = %q, %q, %v", tt.raw, got, token, err)
		}
	}
	u, err := TokenQueryURL("http://127.0.0.1:1/send?x=1", "key", "k&1")
	if err != nil || u.String() != "http://127.0.0.1:1/send?key=k%261&x=1" {
		t.Errorf("TokenQueryURL = %v, %v", u, err)
	}
	if _, err := TokenQueryURL("send", "key", "k"); errText(err) != "base_url is not a URL" {
		t.Errorf("TokenQueryURL(no host) error %v", err)
	}
}

func TestResolveURL(t *testing.T) {
	t.Setenv("NOTIFY_TEST_URL", " tok ")
	var got string
	u, err := ResolveURL("wecom", "", "", "NOTIFY_TEST_URL", func(raw string) (*url.URL, error) {
		got = raw
		return TokenQueryURL("http://127.0.0.1:1/send", "key", "tok")
	})
	if err != nil || u.String() != "http://127.0.0.1:1/send?key=tok" || got != " tok " {
		t.Fatalf("ResolveURL = %v, %v (raw %q)", u, err, got)
	}
	_, err = ResolveURL("wecom", "secret-token", "", "", func(string) (*url.URL, error) { return nil, errors.New("is bad") })
	if errText(err) != "wecom url is bad" {
		t.Fatalf("ResolveURL error %v", err)
	}
}

func TestNewTemplateDefaultLanguage(t *testing.T) {
	for _, def := range []template.Language{template.Chinese, template.English} {
		if _, err := NewTemplate("", def, "告警", "Asia/Shanghai", ""); err != nil {
			t.Fatalf("NewTemplate(%s): %v", def, err)
		}
	}
}

func TestNumberAndEncodeJSON(t *testing.T) {
	for raw, want := range map[string]int64{`0`: 0, `"310000"`: 310000, ` -1 `: -1} {
		if n, ok := Number(json.RawMessage(raw)); !ok || n != want {
			t.Errorf("Number(%s) = %d, %v", raw, n, ok)
		}
	}
	for _, raw := range []string{``, `null`, `"x"`, `1.5`} {
		if _, ok := Number(json.RawMessage(raw)); ok {
			t.Errorf("Number(%s) ok", raw)
		}
	}
	if got := string(EncodeJSON(map[string]string{"t": "<a&b>"})); got != `{"t":"<a&b>"}` {
		t.Errorf("EncodeJSON = %s", got)
	}
}

func TestAttempt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Test") != "1" || r.Header.Get("User-Agent") != "fleetwatch-notifier" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	h := http.Header{"Content-Type": {"application/json"}, "X-Test": {"1"}}
	r := Attempt(t.Context(), srv.Client(), srv.URL+"/?key=sekrit", h, []byte(`{}`), func(resp Response) Result {
		if resp.Status != http.StatusOK || string(resp.Body) != "ok" {
			return Result{Outcome: events.OutcomePermanent, HTTPStatus: resp.Status}
		}
		return Result{Outcome: events.OutcomeDelivered, HTTPStatus: resp.Status}
	})
	if r.Outcome != events.OutcomeDelivered || r.HTTPStatus != 200 || r.Bytes != 2 {
		t.Fatalf("Attempt = %+v", r)
	}
	srv.Close()
	r = Attempt(t.Context(), http.DefaultClient, srv.URL+"/?key=sekrit", h, []byte(`{}`), func(Response) Result {
		t.Fatal("classify called without an answer")
		return Result{}
	})
	if r.Outcome != events.OutcomeRetryable || r.HTTPStatus != 0 || r.Bytes != 2 || errText(r.Err("x")) == "" {
		t.Fatalf("Attempt(closed) = %+v", r)
	}
	if got := RenderFailure(errors.New("boom")); got.Outcome != events.OutcomePermanent || got.RemoteMessage != "boom" || got.Hint != "the message template failed: fix the template" {
		t.Fatalf("RenderFailure = %+v", got)
	}
}
