package jsonscan_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events/jsonscan"
)

// check compares the scanner with encoding/json on data: SkipValue accepts
// exactly the valid JSON (short inputs cannot nest past MaxDepth), a string
// decodes as json.Unmarshal decodes it and quotes back as json.Marshal
// quotes it, an integer reads as json.Unmarshal reads an int64.
func check(t *testing.T, data []byte) {
	t.Helper()
	s := jsonscan.Scanner{B: data}
	s.WS()
	ok := s.SkipValue(0) && s.End()
	if valid := json.Valid(data); ok != valid && (ok || len(data) < 2*jsonscan.MaxDepth) {
		t.Fatalf("%q: SkipValue %v, json.Valid %v", data, ok, valid)
	}

	null := strings.Trim(string(data), " \t\r\n") == "null" // json.Unmarshal accepts it into anything
	s = jsonscan.Scanner{B: data}
	s.WS()
	raw, escaped, ascii, ok := s.Str()
	var want string
	if err := json.Unmarshal(data, &want); (err == nil && !null) != (ok && s.End()) {
		t.Fatalf("%q: Str %v, json.Unmarshal error %v", data, ok, err)
	}
	if ok && s.End() {
		if got := string(jsonscan.AppendUnquoted(nil, raw)); got != want {
			t.Fatalf("%q: AppendUnquoted %q, json.Unmarshal %q", data, got, want)
		}
		if escaped != strings.Contains(string(raw), `\`) || ascii != (strings.IndexFunc(string(raw), func(r rune) bool { return r >= 0x80 }) < 0) {
			t.Fatalf("%q: escaped %v, ascii %v", data, escaped, ascii)
		}
	}
	quoted, _ := json.Marshal(string(data))
	if got := jsonscan.AppendString(nil, string(data)); string(got) != string(quoted) {
		t.Fatalf("%q: AppendString %s, json.Marshal %s", data, got, quoted)
	}

	s = jsonscan.Scanner{B: data}
	s.WS()
	n, ok := s.Integer(64)
	var wantN int64
	err := json.Unmarshal(data, &wantN)
	if ok && s.End() && (err != nil || n != wantN) {
		t.Fatalf("%q: Integer %d, json.Unmarshal %d, %v", data, n, wantN, err)
	}
	if err == nil && !null && !(ok && s.End()) {
		t.Fatalf("%q: Integer refused what json.Unmarshal reads as %d", data, wantN)
	}
}

func TestScanner(t *testing.T) {
	for _, in := range []string{
		`"plain"`, `"é\u00e9\ud83d\ude00\ud800\udc00x\/\b\f\n\r\t\"\\"`, "\"\xff\x7f\"", `"\ud83d"`, `"\u12"`, `"\x"`, "\"a\tb\"", `"abc`,
		`0`, `-0`, `12`, `-9223372036854775808`, `9223372036854775807`, `9223372036854775808`, `1.5`, `1e3`, `01`, `-`, `+1`, `.5`, `1.`,
		`null`, `true`, `false`, `nul`, `[]`, `[1,]`, `{}`, `{"a":[1,{"b":null}],"c":"d"}`, `{"a" 1}`, `{"a":1,}`, ` [ 1 , 2 ] `, ``, " \"x\" ", " null\n", "\t-3 ",
		strings.Repeat("[", 300) + strings.Repeat("]", 300),
	} {
		check(t, []byte(in))
	}
	s := jsonscan.Scanner{B: []byte(strings.Repeat("[", jsonscan.MaxDepth+1) + strings.Repeat("]", jsonscan.MaxDepth+1))}
	if s.SkipValue(0) {
		t.Error("SkipValue went deeper than MaxDepth")
	}
}

func FuzzScanner(f *testing.F) {
	for _, in := range []string{`"a\u00e9\ud83d\ude00"`, "\"\xff\"", `-12`, `1e5`, `{"a":[1,true,null]}`, `[1,]`, strconv.Quote("\u2028<&>")} {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, data)
	})
}
