package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestRedactDropsURL(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &url.Error{Op: "Post", URL: "https://oapi.dingtalk.com/robot/send?access_token=sekrit&sign=abc", Err: errors.New("dial tcp: refused")})
	if got := Redact(err); got != "Post: dial tcp: refused" {
		t.Fatalf("Redact = %q", got)
	}
	_, err = Post(context.Background(), http.DefaultClient, "http://127.0.0.1:1/robot/send?access_token=sekrit", "application/json", nil)
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("Post error %v", err)
	}
	if r := NetworkFailure(err); r.Outcome != events.OutcomeRetryable || strings.Contains(r.RemoteMessage, "sekrit") || r.Hint == "" {
		t.Fatalf("NetworkFailure = %+v", r)
	}
}

func TestHTTPFailure(t *testing.T) {
	tests := []struct {
		status     int
		header     http.Header
		outcome    events.Outcome
		retryAfter time.Duration
	}{
		{500, nil, events.OutcomeRetryable, 0},
		{503, nil, events.OutcomeRetryable, 0},
		{408, nil, events.OutcomeRetryable, 0},
		{429, http.Header{"Retry-After": {"30"}}, events.OutcomeRateLimited, 30 * time.Second},
		{429, http.Header{}, events.OutcomeRateLimited, 0},
		{404, nil, events.OutcomePermanent, 0},
		{403, nil, events.OutcomePermanent, 0},
	}
	for _, tt := range tests {
		h := tt.header
		if h == nil {
			h = http.Header{}
		}
		r := HTTPFailure(tt.status, h, []byte(" body "))
		if r.Outcome != tt.outcome || r.RetryAfter != tt.retryAfter || r.HTTPStatus != tt.status || r.RemoteMessage != "body" || r.Hint == "" {
			t.Errorf("HTTPFailure(%d) = %+v", tt.status, r)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"告警告警", 4, "告…"},
		{"告警", 2, "…"},
	}
	for _, tt := range tests {
		if got := Truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	r := Result{Outcome: events.OutcomePermanent, HTTPStatus: 200, RemoteCode: "310000", RemoteMessage: "sign not match", Hint: "secret does not match"}
	if err := r.Err("dingtalk"); err == nil || err.Error() != "dingtalk: permanent: HTTP 200: code 310000 (sign not match): secret does not match" {
		t.Fatalf("err = %v", err)
	}
	if err := (Result{Outcome: events.OutcomeDelivered}).Err("x"); err != nil {
		t.Fatal(err)
	}
}
