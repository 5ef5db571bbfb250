package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		case "/readyz":
			http.Error(w, `{"status":"not ready"}`, http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"healthy", []string{srv.URL + "/healthz"}, 0, ""},
		{"not ready", []string{srv.URL + "/readyz"}, 1, "healthcheck: " + srv.URL + "/readyz answered 503 Service Unavailable\n"},
		{"no url", nil, 2, "usage: healthcheck URL (e.g. http://127.0.0.1:9464/healthz)\n"},
		{"two urls", []string{"a", "b"}, 2, "usage: healthcheck URL (e.g. http://127.0.0.1:9464/healthz)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != tt.code || stderr.String() != tt.stderr {
				t.Fatalf("run(%q) = %d, %q; want %d, %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
			}
		})
	}

	srv.Close() // nothing listens any more
	var stderr bytes.Buffer
	if code := run([]string{srv.URL + "/healthz"}, &stderr); code != 1 || !strings.HasPrefix(stderr.String(), "healthcheck: ") {
		t.Fatalf("closed server: %d %q", code, stderr.String())
	}
}
