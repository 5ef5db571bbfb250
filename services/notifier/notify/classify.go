package notify

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Class is what one remote code means: the outcome, the wait a rate limit
// announces, and what a human should do.
type Class struct {
	// Outcome is delivered, retryable, rate_limited or permanent.
	Outcome events.Outcome
	// RetryAfter is the least wait before the next attempt (the block a
	// rate limit announces); 0 when the code says nothing.
	RetryAfter time.Duration
	// Hint tells a human what to do; empty for delivered.
	Hint string
	// Refine, when set, finishes the class from what else the answer says:
	// the remote's message (DingTalk's 310000 covers four causes), a
	// header (Feishu's reset time), the configured keyword (for the hint).
	// It gets this class and returns the one that applies.
	Refine func(c Class, a Answer) Class
}

// Answer is a remote's answer as a Codes table sees it.
type Answer struct {
	// Status and Header are the HTTP status and headers.
	Status int
	Header http.Header
	// Code and Msg are the remote's own code and message (errcode/errmsg,
	// code/msg; for a channel that answers with HTTP statuses, the status
	// and the body text).
	Code int64
	Msg  string
	// Keyword is the receiver's configured keyword, for hints.
	Keyword string
}

// Codes is a channel's table of the codes its remote answers with, as its
// contract lists them (shared/contracts/chat.md).
type Codes struct {
	// Noun names the code in the hint of an unknown one ("errcode").
	Noun string
	// Known maps every code the contract lists to its class.
	Known map[int64]Class
}

// Class returns the class of a.Code, refined by the answer; ok is false
// for a code the table does not know.
func (c Codes) Class(a Answer) (cl Class, ok bool) {
	cl, ok = c.Known[a.Code]
	if ok && cl.Refine != nil {
		cl = cl.Refine(cl, a)
	}
	return cl, ok
}

// Classify classifies an answer that carried a code: the code's class, or
// for an unknown code a retryable failure (a new code is retried a bounded
// number of times rather than dropped). RemoteMessage is a.Msg cut to 300
// bytes.
func (c Codes) Classify(a Answer) Result {
	cl, ok := c.Class(a)
	if !ok {
		cl = Class{Outcome: events.OutcomeRetryable, Hint: fmt.Sprintf("unknown %s %d: retrying a bounded number of times", c.Noun, a.Code)}
	}
	return Result{
		Outcome: cl.Outcome, HTTPStatus: a.Status, RemoteCode: strconv.FormatInt(a.Code, 10),
		RemoteMessage: Truncate(a.Msg, 300), Hint: cl.Hint, RetryAfter: cl.RetryAfter,
	}
}

// Transient reports whether an HTTP status is worth retrying whatever the
// body says: 5xx and 408.
func Transient(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout
}

// NoCode classifies an answer without a readable code: a non-2xx status
// by HTTPFailure, a 2xx as retryable with hint (which asks whether the
// URL is the right service or a proxy answers).
func NoCode(status int, header http.Header, body []byte, hint string) Result {
	if status < 200 || status > 299 {
		return HTTPFailure(status, header, body)
	}
	return Result{
		Outcome: events.OutcomeRetryable, HTTPStatus: status,
		RemoteMessage: Truncate(strings.TrimSpace(string(body)), 200), Hint: hint,
	}
}

// WaitHeader is the first positive wait in seconds among the named headers
// (e.g. x-ogw-ratelimit-reset, then Retry-After), and at least least; with
// none, least.
func WaitHeader(h http.Header, least time.Duration, names ...string) time.Duration {
	for _, name := range names {
		if d := RetryAfterHeader(h.Get(name)); d > 0 {
			return max(d, least)
		}
	}
	return least
}

// KeywordHint is the hint for a message the remote refused for its
// security keywords; owner names the webhook's owner ("robot", "bot") and
// keyword is the configured keyword ("" when none is).
func KeywordHint(owner, keyword string) string {
	if keyword != "" {
		return fmt.Sprintf("the %s's keywords do not include %q: add keyword %s to the %s (or set keyword to one of the %s's keywords)", owner, keyword, keyword, owner, owner)
	}
	return fmt.Sprintf("the %s requires a keyword: set keyword to one of the %s's keywords (e.g. 告警) so every message carries it", owner, owner)
}
