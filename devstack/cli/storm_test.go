package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestStormFlags(t *testing.T) {
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{args: []string{"storm", "--help"}, code: 0, err: "-scenario"},
		{args: []string{"storm", "--scenario", "tornado"}, code: 2, err: `scenario "tornado": use one of reconnect`},
		{args: []string{"storm", "--devices", "5"}, code: 2, err: "devices is 5: use at least 10"},
		{args: []string{"storm", "--window", "9000"}, code: 2, err: "window in [1, 8000]"},
		{args: []string{"storm", "--flap-half-life", "100ms"}, code: 2, err: "flap half-life 100ms: use 1s to 24h"},
		{args: []string{"storm", "--node-silent-after", "4s"}, code: 2, err: "node silent after 4s: use a positive duration of at most half the grace (2.5s)"},
		{args: []string{"storm", "--cpuprofile", "/nonexistent/dir/cpu.out", "--devices", "5"}, code: 2, err: "devices is 5"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := Run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("Run(%q) = %d\nstderr: %s\nwant %d, stderr with %q", tc.args, code, errb.String(), tc.code, tc.err)
		}
	}
}
