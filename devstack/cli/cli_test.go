package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{args: nil, code: 2, err: "Usage:"},
		{args: []string{"help"}, code: 0, out: "fleetwatch dev [flags]"},
		{args: []string{"bogus"}, code: 2, err: `unknown command "bogus"`},
		{args: []string{"dev", "--help"}, code: 0, err: "-grace"},
		{args: []string{"dev", "--lang", "fr"}, code: 2, err: `--lang "fr": use zh or en`},
		{args: []string{"dev", "--log-level", "loud"}, code: 2, err: `--log-level "loud"`},
		{args: []string{"dev", "--sites", "0"}, code: 1, err: "simulator sites is 0: use 1 to 26"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := Run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("Run(%q) = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}
