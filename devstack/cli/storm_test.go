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
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := Run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("Run(%q) = %d\nstderr: %s\nwant %d, stderr with %q", tc.args, code, errb.String(), tc.code, tc.err)
		}
	}
}
