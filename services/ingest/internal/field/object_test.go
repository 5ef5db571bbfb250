package field

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// probe is what encoding/json fills for the keys Object is asked for.
type probe struct {
	ClientID json.RawMessage `json:"clientid"`
	TS       json.RawMessage `json:"ts"`
	Props    json.RawMessage `json:"conn_props"`
}

func (p *probe) members() []Member {
	return []Member{{Key: "clientid", Val: &p.ClientID}, {Key: "ts", Val: &p.TS}, {Key: "conn_props", Val: &p.Props}}
}

// compare checks Object against json.Unmarshal on data: when Object
// accepts, encoding/json must accept too and give the same values; when
// encoding/json rejects, Object must reject.
func compare(t *testing.T, data []byte) (accepted bool) {
	t.Helper()
	var fast, slow probe
	ok := Object(data, fast.members())
	err := json.Unmarshal(data, &slow)
	if err != nil && ok {
		t.Fatalf("Object accepted %q, encoding/json rejects it: %v", data, err)
	}
	if ok && (!bytes.Equal(fast.ClientID, slow.ClientID) || !bytes.Equal(fast.TS, slow.TS) || !bytes.Equal(fast.Props, slow.Props)) {
		t.Fatalf("Object(%q) = %q %q %q, encoding/json %q %q %q", data,
			fast.ClientID, fast.TS, fast.Props, slow.ClientID, slow.TS, slow.Props)
	}
	return ok
}

func TestObject(t *testing.T) {
	for _, tc := range []struct {
		in     string
		accept bool // whether Object itself handles it (else the caller falls back)
	}{
		{`{"clientid":"d1","ts":1718000000000}`, true},
		{" \t\r\n{ \"clientid\" : \"d1\" , \"ts\" : -1.5e+3 }\n", true},
		{`{}`, true},
		{`{"other":{"a":[1,2,{"b":null}],"c":"\u00e9\n"},"clientid":null}`, true},
		{`{"clientid":"a","clientid":"b"}`, true}, // the last wins
		{`{"conn_props":{"Session-Expiry-Interval":0},"ts":true}`, true},
		{`{"clientid":"caf` + "\xff" + `"}`, true}, // invalid UTF-8 is kept raw, as encoding/json keeps it
		{`{"ClientID":"d1"}`, false},               // encoding/json matches case-insensitively
		{`{"client\u0069d":"d1"}`, false},          // an escaped key
		{"{\"\u212a\":1}", true},                   // the Kelvin sign folds to k: no wanted key
		{`{"clientid":"d1"} x`, false},
		{`{"clientid":"d1"`, false},
		{`{"clientid":01}`, false},
		{`{"clientid":1.}`, false},
		{`{"clientid":-}`, false},
		{`{"clientid":"\x"}`, false},
		{`{"clientid":"` + "\n" + `"}`, false},
		{`{"clientid":tru}`, false},
		{`{"a":1,}`, false},
		{`{,}`, false},
		{`[]`, false},
		{"\ufeff{}", false},
		{`{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`, false},
		{`{"a":` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + `}`, true},
	} {
		if got := compare(t, []byte(tc.in)); got != tc.accept {
			t.Errorf("Object(%q) = %v, want %v", tc.in, got, tc.accept)
		}
	}
}

func FuzzObject(f *testing.F) {
	for _, s := range []string{
		`{"clientid":"d1","ts":1718000000000,"conn_props":{"a":[1,{"b":"c"}]}}`,
		`{"clientid":"caf\u00e9","TS":1}`, `{"clientid":null}`, `{"a":[true,false,null,-0.5E-7]}`, `{`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { compare(t, data) })
}

func TestPlainValues(t *testing.T) {
	for _, raw := range []string{`"plain"`, `"caf` + "\xc3\xa9" + `"`, `"bad` + "\xff" + `"`, `"esc\"aped"`, `"\u0041"`, `""`} {
		s, err := String(json.RawMessage(raw), "f", false)
		var want string
		if jerr := json.Unmarshal([]byte(raw), &want); jerr != nil || err != nil || s != want {
			t.Errorf("String(%s) = %q, %v; encoding/json %q, %v", raw, s, err, want, jerr)
		}
	}
	for raw, want := range map[string]int64{"0": 0, "-0": 0, "123": 123, "-42": -42, "999999999999999999": 999999999999999999,
		"9223372036854775807": 9223372036854775807, "1e3": 1000, "2.0": 2} {
		if got, ok, err := Int(json.RawMessage(raw), "f"); err != nil || !ok || got != want {
			t.Errorf("Int(%s) = %d, %v, %v; want %d", raw, got, ok, err, want)
		}
	}
	if _, _, err := Int(json.RawMessage("9223372036854775808"), "f"); err == nil {
		t.Error("Int(2^63) = nil error, want out of range")
	}
}

// FuzzString checks the fast string and integer paths against
// encoding/json on any JSON value.
func FuzzString(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9"`, "\"\xff\"", `12`, `-0`, `1.5`, `"undefined"`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		raw = bytes.TrimSpace(raw)
		s, err := String(raw, "f", false)
		var want string
		if jerr := json.Unmarshal(raw, &want); (jerr == nil) != (err == nil || raw[0] == 'n') || (err == nil && jerr == nil && s != want) {
			t.Fatalf("String(%q) = %q, %v; encoding/json %q, %v", raw, s, err, want, jerr)
		}
		if v, ok := plainInt(raw); ok {
			var n json.Number
			if err := json.Unmarshal(raw, &n); err != nil {
				t.Fatalf("plainInt accepted %q: %v", raw, err)
			}
			if w, err := n.Int64(); err != nil || w != v {
				t.Fatalf("plainInt(%q) = %d, encoding/json %s", raw, v, n)
			}
		}
	})
}
