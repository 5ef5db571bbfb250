// Package notify holds what every chat channel shares, so that a channel
// package (notify/<name>) keeps only what is its own: its message schemas,
// its signing, its code table and its hints. Shared here: the classified
// Result of one delivery attempt; the HTTP round trip with a bounded
// response read (Attempt, Base.Post); the redaction that keeps webhook
// tokens and signatures out of errors; the config checks and the URL and
// secret reading of the receivers (Source, NewBase); the table-driven
// classification of a remote's codes (Codes, Class); the Retry-After and
// reset headers (WaitHeader); and the plain-text and markdown pieces the
// channels render messages from.
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// MaxBodyBytes is the byte budget of every request body: DingTalk and
// Feishu both refuse bodies over 20000 bytes.
const MaxBodyBytes = 20000

// maxResponseBytes bounds how much of a response is read.
const maxResponseBytes = 64 << 10

// Result is the classified outcome of one delivery attempt.
type Result struct {
	// Outcome is delivered, retryable, rate_limited or permanent.
	Outcome events.Outcome
	// HTTPStatus is the remote's HTTP status (0 when none was received).
	HTTPStatus int
	// RemoteCode is the remote's own code (errcode/code) as text.
	RemoteCode string
	// RemoteMessage is the remote's own message, or the network error.
	RemoteMessage string
	// Hint tells a human what to do about a failure.
	Hint string
	// RetryAfter is the least wait before the next attempt the remote
	// asked for (rate limits, blocks); 0 when it said nothing.
	RetryAfter time.Duration
	// Bytes is the size of the request body sent.
	Bytes int
	// Latency is how long the attempt took.
	Latency time.Duration
}

// Error describes a failed attempt. It never contains the webhook URL,
// token, secret or signature.
type Error struct {
	// Channel is the channel that failed (dingtalk, feishu).
	Channel string
	// Result is the attempt's classification.
	Result Result
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Channel, e.Result.Outcome)
	if e.Result.HTTPStatus != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Result.HTTPStatus)
	}
	if e.Result.RemoteCode != "" {
		fmt.Fprintf(&b, ": code %s", e.Result.RemoteCode)
	}
	if e.Result.RemoteMessage != "" {
		fmt.Fprintf(&b, " (%s)", e.Result.RemoteMessage)
	}
	if e.Result.Hint != "" {
		fmt.Fprintf(&b, ": %s", e.Result.Hint)
	}
	return b.String()
}

// Err returns nil for a delivered result and an *Error otherwise.
func (r Result) Err(channel string) error {
	if r.Outcome == events.OutcomeDelivered {
		return nil
	}
	return &Error{Channel: channel, Result: r}
}

// Response is what came back from one HTTP request.
type Response struct {
	Status int
	Header http.Header
	// Body is at most 64 KiB of the response body.
	Body []byte
}

// Post sends body to u with the given Content-Type and reads a bounded
// response. Its error never contains u (which holds the token and sign).
func Post(ctx context.Context, client *http.Client, u, contentType string, body []byte) (Response, error) {
	return PostHeaders(ctx, client, u, http.Header{"Content-Type": {contentType}}, body)
}

// PostHeaders is Post with any request headers (Content-Type among them).
func PostHeaders(ctx context.Context, client *http.Client, u string, header http.Header, body []byte) (Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Response{}, errors.New("build request: " + Redact(err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "fleetwatch-notifier")
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, errors.New(Redact(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return Response{Status: resp.StatusCode, Header: resp.Header}, errors.New("read response: " + Redact(err))
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Attempt POSTs body to u with header and classifies the answer with
// classify; a request that got no answer is a NetworkFailure (with the
// status, if one arrived before the body failed). Bytes is len(body) and
// Latency the time of the round trip.
func Attempt(ctx context.Context, client *http.Client, u string, header http.Header, body []byte, classify func(Response) Result) Result {
	start := time.Now()
	resp, err := PostHeaders(ctx, client, u, header, body)
	var r Result
	if err != nil {
		r = NetworkFailure(err)
		r.HTTPStatus = resp.Status
	} else {
		r = classify(resp)
	}
	r.Bytes = len(body)
	r.Latency = time.Since(start)
	return r
}

// RenderFailure is the permanent result of a message the template could
// not render.
func RenderFailure(err error) Result {
	return Result{Outcome: events.OutcomePermanent, RemoteMessage: err.Error(), Hint: "the message template failed: fix the template"}
}

// Redact renders err without the request URL that net/http puts in its
// errors (the URL carries the access token and the signature).
func Redact(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// NetworkFailure classifies an attempt that got no HTTP answer.
func NetworkFailure(err error) Result {
	hint := "network error: check that the notifier can reach the webhook host (DNS, proxy, firewall)"
	if errors.Is(err, context.DeadlineExceeded) {
		hint = "the request timed out: the webhook host is slow or unreachable"
	}
	return Result{Outcome: events.OutcomeRetryable, RemoteMessage: Truncate(err.Error(), 300), Hint: hint}
}

// HTTPFailure classifies a non-2xx HTTP status that carried no readable
// business code: 5xx and 408 are transient, 429 is a rate limit, other 4xx
// mean the URL or request is wrong.
func HTTPFailure(status int, header http.Header, body []byte) Result {
	r := Result{HTTPStatus: status, RemoteMessage: Truncate(strings.TrimSpace(string(body)), 200)}
	switch {
	case status == http.StatusTooManyRequests:
		r.Outcome = events.OutcomeRateLimited
		r.RetryAfter = RetryAfterHeader(header.Get("Retry-After"))
		r.Hint = "the platform is throttling requests"
	case status >= 500 || status == http.StatusRequestTimeout:
		r.Outcome = events.OutcomeRetryable
		r.Hint = "the chat service or a proxy failed; retrying"
	case status == http.StatusNotFound:
		r.Outcome = events.OutcomePermanent
		r.Hint = "the webhook URL does not exist: copy the whole webhook URL from the robot's settings"
	default:
		r.Outcome = events.OutcomePermanent
		r.Hint = fmt.Sprintf("HTTP %d: check the webhook URL and any proxy in between", status)
	}
	return r
}

// RetryAfterHeader parses a Retry-After value in seconds (0 if absent or bad).
func RetryAfterHeader(v string) time.Duration {
	var n int64
	if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 24*3600)) * time.Second
}

// Truncate cuts s to at most n bytes on a rune boundary, adding "…".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
