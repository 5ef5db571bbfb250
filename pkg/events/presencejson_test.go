package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/fleetwatch/fleetwatch/pkg/events/jsonscan"
)

// presenceMembers are PresenceEvent's JSON tags, in order, as AppendPresence
// writes them and DecodePresence reads them. When PresenceEvent gains a
// field, TestPresenceCodecKnowsEveryField fails: add the field to
// AppendPresence, to presenceParser.member and here.
var presenceMembers = []string{"v", "id", "device_id", "kind", "reason,omitempty", "raw_reason,omitempty", "node",
	"broker_ts_ms", "connected_at_ms,omitempty", "conn_version,omitempty", "ip,omitempty", "username,omitempty",
	"protocol,omitempty", "proto_ver,omitempty", "keepalive_s,omitempty", "source", "received_at_ms"}

func TestPresenceCodecKnowsEveryField(t *testing.T) {
	typ := reflect.TypeFor[PresenceEvent]()
	var tags []string
	for i := range typ.NumField() {
		tags = append(tags, typ.Field(i).Tag.Get("json"))
	}
	if !reflect.DeepEqual(tags, presenceMembers) {
		t.Fatalf("PresenceEvent's JSON fields are\n%q\nthe codec knows\n%q\nupdate AppendPresence, presenceParser.member and presenceMembers", tags, presenceMembers)
	}
	// Each field alone, set: encoded as json.Marshal does, and decoded on
	// the fast path as encoding/json decodes it.
	for i := range typ.NumField() {
		var e PresenceEvent
		f := reflect.ValueOf(&e).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x\u00e9\"")
		case reflect.Int, reflect.Int64:
			f.SetInt(-42)
		default:
			t.Fatalf("field %s: kind %s not handled by the codec", typ.Field(i).Name, f.Kind())
		}
		data := checkAppend(t, e)
		if got := fastDecode(t, data, PresenceEvent{}); got != e {
			t.Errorf("field %s: decoded %+v, want %+v", typ.Field(i).Name, got, e)
		}
	}
}

// presenceGoldens are the presence files of testdata/v1.
func presenceGoldens(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "v1", "presence_*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("presence goldens: %v %v", files, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// checkAppend checks AppendPresence against json.Marshal and returns the
// JSON.
func checkAppend(t testing.TB, e PresenceEvent) []byte {
	t.Helper()
	want, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got := AppendPresence([]byte("prefix"), &e)
	if string(got) != "prefix"+string(want) {
		t.Fatalf("AppendPresence:\n got %s\nwant prefix%s", got, want)
	}
	return want
}

// fastDecode decodes data from start on the fast path, which must take it.
func fastDecode(t testing.TB, data []byte, start PresenceEvent) PresenceEvent {
	t.Helper()
	p := presenceParser{Scanner: jsonscan.Scanner{B: data}}
	if !p.event(&start) {
		t.Fatalf("%q: not decoded on the fast path", data)
	}
	return start
}

// checkDecode checks DecodePresence and a PresenceDecoder against
// json.Unmarshal on data, from start: the same event and the same error.
func checkDecode(t testing.TB, data []byte, start PresenceEvent) {
	t.Helper()
	want := start
	werr := json.Unmarshal(data, &want)
	got := start
	gerr := DecodePresence(data, &got)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) || got != want {
		t.Fatalf("%q from %+v:\nDecodePresence %+v, %v\njson.Unmarshal %+v, %v", data, start, got, gerr, want, werr)
	}
	// Each path alone, where it decodes, as encoding/json does: compact
	// (what the usual payload takes) and general (the rest).
	for _, path := range []struct {
		name   string
		decode func(*presenceParser, *PresenceEvent) bool
	}{{"compact", (*presenceParser).compact}, {"general", (*presenceParser).general}} {
		p := presenceParser{Scanner: jsonscan.Scanner{B: data}}
		got = start
		if path.decode(&p, &got) && (werr != nil || got != want) {
			t.Fatalf("%q from %+v:\n%s path %+v\njson.Unmarshal %+v, %v", data, start, path.name, got, want, werr)
		}
	}
	d := NewPresenceDecoder(8)
	for range 2 { // the second time with the strings interned
		got = start
		gerr = d.Decode(data, &got)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || got != want {
			t.Fatalf("%q from %+v:\nPresenceDecoder %+v, %v\njson.Unmarshal  %+v, %v", data, start, got, gerr, want, werr)
		}
	}
	d = &PresenceDecoder{Borrow: true}
	got = start
	gerr = d.Decode(data, &got)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) || got != want {
		t.Fatalf("%q from %+v:\nborrowing PresenceDecoder %+v, %v\njson.Unmarshal  %+v, %v", data, start, got, gerr, want, werr)
	}
}

// filled is a start event with every field set, to see which fields an
// input leaves alone.
var filled = PresenceEvent{V: 9, ID: "old-id", DeviceID: "old-dev", Kind: "old-kind", Reason: "old-reason",
	RawReason: "old-raw", Node: "old-node", BrokerTSMS: 11, ConnectedAtMS: 12, ConnVersion: 13, IP: "old-ip",
	Username: "old-user", Protocol: "old-proto", ProtoVer: 14, KeepaliveS: 15, Source: "old-source", ReceivedAtMS: 16}

func TestAppendPresenceMatchesMarshal(t *testing.T) {
	for name, b := range presenceGoldens(t) {
		var e PresenceEvent
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data := checkAppend(t, e)
		var indented bytes.Buffer
		if err := json.Indent(&indented, data, "", "  "); err != nil {
			t.Fatal(err)
		}
		if want := bytes.TrimSpace(b); !bytes.Equal(indented.Bytes(), want) {
			t.Errorf("%s: AppendPresence, indented:\n%s\nwant\n%s", name, indented.Bytes(), want)
		}
	}
	checkAppend(t, PresenceEvent{})
	checkAppend(t, filled)
	checkAppend(t, PresenceEvent{V: 1, ID: "abc", DeviceID: "dev <1> & \"two\"\\\x00\x1f\x7f\u2028\u2029é\xff日本",
		Kind: KindDisconnected, Reason: ReasonOther, RawReason: "{shutdown,\tx}\n\r\b\f", Node: "emqx@10.0.0.1",
		BrokerTSMS: 1718000000000, ConnectedAtMS: -1, ConnVersion: 255, IP: "2001:db8::1", Username: "u",
		Protocol: "mqtt", ProtoVer: 5, KeepaliveS: 60, Source: "s", ReceivedAtMS: 1})
	checkAppend(t, PresenceEvent{V: -1 << 63, BrokerTSMS: 1<<63 - 1, ConnectedAtMS: -1 << 63, ProtoVer: 1<<63 - 1})
}

func TestDecodePresenceGoldens(t *testing.T) {
	for name, b := range presenceGoldens(t) {
		checkDecode(t, b, PresenceEvent{})
		e := fastDecode(t, b, PresenceEvent{})
		if err := e.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Inputs DecodePresence takes on its fast path (all valid JSON that
// encoding/json accepts into a PresenceEvent).
var fastInputs = []string{
	`{}`,
	`null`,
	" \t\r\n{ \"v\" : 1 , \"id\":\"x\\u00e9\\/\\b\\f\\r\\n\\t\\\"\\\\\" } \n",
	`{"v":1,"v":-0,"broker_ts_ms":-9223372036854775808,"received_at_ms":9223372036854775807}`,
	`{"v":1,"id":"x","device_id":"d1","kind":"connected","node":"n1","broker_ts_ms":1700000000000,"connected_at_ms":1700000000000,"keepalive_s":60,"source":"s","received_at_ms":5}`,
	` { "device_id" : "a.b*c>d é 设备" , "kind":"disconnected","reason":"closed","raw_reason":"tcp_closed","node":"n","broker_ts_ms":1} `,
	`{"device_id":"esc\"aped\\\u00e9\ud83d\ude00","node":"n\/1"}`, // a surrogate pair
	`{"device_id":"bad \ud800 surrogate"}`,      // a lone surrogate: U+FFFD
	`{"device_id":"\ud83d\ud83d\ude00\udc00x"}`, // high, pair, lone low
	`{"device_id":"\ud83d\u0041"}`,              // high then not a low surrogate
	`{"device_id":"\uD83D\uDE00\u00E9\uFFFD"}`,  // upper-case hex
	"{\"device_id\":\"invalid utf8 \xff\xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80\"}",
	"{\"device_id\":\"a\\n\xffb\"}",                          // invalid UTF-8 after an escape
	"{\"device_id\":\"\x7f\"}",                               // DEL is not a control character for JSON
	`{"DEVICE_ID":"folded","Broker_TS_MS":7,"V":2,"Id":"i"}`, // names match case-insensitively
	`{"device_id":"a","device_id":"b","Device_Id":"c"}`,      // the last wins
	`{"device_id":null,"broker_ts_ms":null,"v":null}`,        // null keeps the field
	`{"device_id":"a","device_id":null}`,
	`{"extra":{"nested":[1,2.5e3,{"x":null}],"t":true,"f":false,"e":[],"o":{}},"device_id":"d"}`,
	`{"future_field":1,"v":1,"other":"\ud800\n","n":-0.5E-7}`,
	`{"x":-0,"y":0.0,"z":1E+2,"w":1e-2,"s":"\u0000"}`,
	`{"device_id_and_more":"x","VV":1,"":2}`, // unknown names
	`{"proto_ver":9223372036854775807,"keepalive_s":-9223372036854775808}`,
	`{"v":1}  `,
}

// Inputs left to encoding/json: invalid ones, type errors, and valid
// shapes the fast path does not handle.
var slowInputs = []string{
	`{"v":1.0}`,                 // a float into an int: a type error
	`{"v":1e0}`,                 // an exponent
	`{"v":01}`,                  // not JSON
	`{"v":-}`,                   // not JSON
	`{"v":- 1}`,                 // not JSON
	`{"v":9223372036854775808}`, // out of range
	`{"v":-9223372036854775809}`,
	`{"v":99999999999999999999999}`,
	`{"v":"1"}`,                                           // a string into an int
	`{"v":true}`,                                          // a bool into an int
	`{"id":1}`,                                            // a number into a string
	`{"id":false}`,                                        // a bool into a string
	`{"id":{}}`,                                           // an object into a string
	`{"id":[]}`,                                           // an array into a string
	`{"id":nul}`,                                          // not JSON
	`{"id":"\x"}`,                                         // a bad escape
	`{"id":"\'"}`,                                         // a bad escape (encoding/json's unquote knows it, its scanner does not)
	`{"id":"\u12"}`,                                       // a short \u escape
	`{"id":"\u12G4"}`,                                     // a bad \u escape
	"{\"id\":\"a\tb\"}",                                   // a raw control character
	"{\"id\":\"a\\n\x01\"}",                               // a raw control character after an escape
	`{"v":1}{}`,                                           // trailing data
	`{"v":1} x`,                                           // trailing data
	`{"v":1,}`,                                            // a trailing comma
	`{,"v":1}`,                                            // a leading comma
	`{"v" 1}`,                                             // no colon
	`{"v":1 "id":"x"}`,                                    // no comma
	`{"v":1`,                                              // truncated
	`{"id":"abc`,                                          // truncated string
	`{"id":"abc\`,                                         // truncated escape
	`{v:1}`,                                               // an unquoted name
	`{"ſource":"s"}`,                                      // a non-ASCII name that folds onto source
	`{"\u0076":7}`,                                        // an escaped name
	"{\"\xff\":1}",                                        // invalid UTF-8 in a name
	`{"x":[1,]}`,                                          // not JSON inside an unknown member
	`{"x":tru}`,                                           // not JSON
	`{"x":1.}`,                                            // not JSON
	`{"x":.5}`,                                            // not JSON
	`{"x":1e}`,                                            // not JSON
	`{"x":+1}`,                                            // not JSON
	`{"x":"a` + "\n" + `b"}`,                              // a control character inside an unknown member
	`{"x":{"a" 1}}`,                                       // not JSON
	`{"x":{"a":1,}}`,                                      // not JSON
	`{"x":{1:1}}`,                                         // not JSON
	`{"x":[1 2]}`,                                         // not JSON
	`{"x":nan}`,                                           // not JSON
	`[]`, `[1]`, `""`, `"v"`, `1`, `true`, `nullx`, `nul`, // not an object
	``, ` `, `{`, `}`, "\xef\xbb\xbf{}", // empty, broken, a BOM
	strings.Repeat("[", 300) + strings.Repeat("]", 300),                               // deep, not an object
	`{"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`,               // deeper than the fast path follows
	`{"x":` + strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat("}", 10001) + `}`, // deeper than encoding/json allows
}

func TestDecodePresenceMatchesEncodingJSON(t *testing.T) {
	for _, in := range append(fastInputs, slowInputs...) {
		checkDecode(t, []byte(in), PresenceEvent{})
		checkDecode(t, []byte(in), filled)
	}
}

func TestDecodePresenceFastPath(t *testing.T) {
	for _, in := range fastInputs {
		fastDecode(t, []byte(in), filled)
	}
	for _, in := range slowInputs {
		p := presenceParser{Scanner: jsonscan.Scanner{B: []byte(in)}}
		e := filled
		if p.event(&e) {
			t.Errorf("%.80q: decoded on the fast path as %+v, want encoding/json's decision", in, e)
		}
	}
}

func TestDecodePresenceErrorsAreEncodingJSONs(t *testing.T) {
	var e PresenceEvent
	err := DecodePresence([]byte(`{"broker_ts_ms":"soon"}`), &e)
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) || err.Error() != "json: cannot unmarshal string into Go struct field PresenceEvent.broker_ts_ms of type int64" {
		t.Errorf("type error: %v", err)
	}
	err = DecodePresence([]byte(`{not json`), &e)
	var syntaxErr *json.SyntaxError
	if !errors.As(err, &syntaxErr) || err.Error() != "invalid character 'n' looking for beginning of object key string" {
		t.Errorf("syntax error: %v", err)
	}
}

func TestPresenceDecoderInterns(t *testing.T) {
	d := NewPresenceDecoder(5) // the five strings of line
	line := []byte(`{"id":"i1","device_id":"dev-1","kind":"connected","node":"emqx@n1","ip":"10.0.0.1","username":"u","source":"s"}`)
	var a, b PresenceEvent
	if err := d.Decode(line, &a); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(line, &b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("%+v != %+v", a, b)
	}
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	if !same(a.DeviceID, b.DeviceID) || !same(a.Node, b.Node) || !same(a.Source, b.Source) || !same(a.Username, b.Username) {
		t.Errorf("device id, node, source or username not interned")
	}
	if same(a.ID, b.ID) || same(a.IP, b.IP) {
		t.Errorf("id or ip interned")
	}
	// Past its bound, it allocates new strings.
	var c, c2 PresenceEvent
	other := []byte(`{"device_id":"dev-2"}`)
	_ = d.Decode(other, &c)
	_ = d.Decode(other, &c2)
	if c.DeviceID != "dev-2" || same(c.DeviceID, c2.DeviceID) {
		t.Errorf("past the bound: %q interned", c.DeviceID)
	}
}

func TestPresenceDecoderBorrow(t *testing.T) {
	d := &PresenceDecoder{Borrow: true}
	for _, line := range []string{
		`{"id":"i1","device_id":"dev-1","kind":"connected","node":"emqx@n1","ip":"10.0.0.1","username":"u","source":"s"}`,
		` { "id" : "i1", "device_id" : "dev-1", "kind":"connected","node":"emqx@n1","ip":"10.0.0.1","username":"u","source":"s"}`,
	} {
		data := []byte(line)
		var e PresenceEvent
		if err := d.Decode(data, &e); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{e.ID, e.DeviceID, string(e.Kind), e.Node, e.IP, e.Username, e.Source} {
			if p := unsafe.StringData(s); uintptr(unsafe.Pointer(p)) < uintptr(unsafe.Pointer(&data[0])) ||
				uintptr(unsafe.Pointer(p)) >= uintptr(unsafe.Pointer(&data[0]))+uintptr(len(data)) {
				t.Errorf("%s: %q does not point into the data", line, s)
			}
		}
	}
	// Escaped strings are decoded into strings of their own.
	data := []byte(`{"device_id":"a\u00e9"}`)
	var e PresenceEvent
	if err := d.Decode(data, &e); err != nil || e.DeviceID != "a\u00e9" {
		t.Fatalf("%+v, %v", e, err)
	}
	clear(data)
	if e.DeviceID != "a\u00e9" {
		t.Errorf("an unescaped string points into the data: %q", e.DeviceID)
	}
}

func TestPresenceDecoderIgnoreID(t *testing.T) {
	d := NewPresenceDecoder(10)
	d.IgnoreID = true
	for _, tt := range []struct {
		in      string
		wantErr bool
	}{
		{`{"id":"new","device_id":"d"}`, false},
		{`{"ID":"new","device_id":"d"}`, false},
		{`{"\u0069d":"new","device_id":"d"}`, false}, // through encoding/json
		{`{"id":1,"device_id":"d"}`, true},
		{`{"id":"\x","device_id":"d"}`, true},
	} {
		e := PresenceEvent{ID: "kept"}
		err := d.Decode([]byte(tt.in), &e)
		if (err != nil) != tt.wantErr || e.ID != "kept" || !tt.wantErr && e.DeviceID != "d" {
			t.Errorf("%s: %+v, %v", tt.in, e, err)
		}
	}
}

// FuzzAppendPresence checks AppendPresence against json.Marshal, and that
// DecodePresence reads what it writes on its fast path.
func FuzzAppendPresence(f *testing.F) {
	f.Add("dev-1", "normal", "emqx@n", "10.0.0.1", "<u&>", int64(1718000000000), int64(7), 5)
	f.Add("\xff\u2028", "", "", "", "", int64(0), int64(-1), 0)
	f.Add("\x00\"\\\t\ud7ff\U0001F600", "{a,b}", "", "", "", int64(-1<<63), int64(1<<63-1), -1)
	f.Fuzz(func(t *testing.T, device, reason, node, ip, user string, ts, ver int64, pv int) {
		e := PresenceEvent{V: 1, ID: device + node, DeviceID: device, Kind: Kind(reason),
			Reason: Reason(reason), RawReason: reason, Node: node, BrokerTSMS: ts, ConnectedAtMS: ts / 3,
			ConnVersion: ver, IP: ip, Username: user, Protocol: user, ProtoVer: pv, KeepaliveS: pv / 2, Source: ip, ReceivedAtMS: -ts}
		data := checkAppend(t, e)
		var want PresenceEvent
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if got := fastDecode(t, data, PresenceEvent{}); got != want {
			t.Fatalf("%q: decoded %+v, want %+v", data, got, want)
		}
	})
}

// FuzzDecodePresence checks DecodePresence and PresenceDecoder against
// json.Unmarshal, from a zero and from a filled event: the same event and
// the same error on every input.
func FuzzDecodePresence(f *testing.F) {
	for _, b := range presenceGoldens(f) {
		f.Add(b)
	}
	for _, in := range fastInputs {
		f.Add([]byte(in))
	}
	for _, in := range slowInputs[:len(slowInputs)-1] {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b, PresenceEvent{})
		checkDecode(t, b, filled)
	})
}

// BenchmarkAppendPresence compares AppendPresence with json.Marshal.
func BenchmarkAppendPresence(b *testing.B) {
	var e PresenceEvent
	if err := json.Unmarshal(presenceGoldens(b)["presence_disconnected.json"], &e); err != nil {
		b.Fatal(err)
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = AppendPresence(buf[:0], &e)
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodePresence compares DecodePresence, a PresenceDecoder that
// has seen the event's strings, and json.Unmarshal.
func BenchmarkDecodePresence(b *testing.B) {
	data := presenceGoldens(b)["presence_disconnected.json"]
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e PresenceEvent
			if err := DecodePresence(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder", func(b *testing.B) {
		d := NewPresenceDecoder(100)
		b.ReportAllocs()
		for b.Loop() {
			var e PresenceEvent
			if err := d.Decode(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e PresenceEvent
			if err := json.Unmarshal(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The usual payload: compact, as AppendPresence and json.Marshal
	// write it (the golden above is indented).
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		b.Fatal(err)
	}
	b.Run("decoder_compact", func(b *testing.B) {
		d := NewPresenceDecoder(100)
		b.ReportAllocs()
		for b.Loop() {
			var e PresenceEvent
			if err := d.Decode(compact.Bytes(), &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
