package events_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// tokenSafe is what EncodeToken may produce: printable ASCII without the
// NATS subject specials ('.', '*', '>') and without whitespace.
var tokenSafe = regexp.MustCompile(`^[A-Za-z0-9_%~-]+$`)

// maxTokenLen mirrors the unexported bound of an encoded token.
const maxTokenLen = 200

func hashedToken(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "~" + hex.EncodeToString(sum[:])
}

func TestEncodeToken(t *testing.T) {
	long := strings.Repeat("a", maxTokenLen)
	tests := []struct {
		id   string
		want string
	}{
		{"dev-42", "dev-42"},
		{"Sensor_07-B", "Sensor_07-B"},
		{"", "%"},
		{"a.b", "a%2Eb"},
		{"*", "%2A"},
		{">", "%3E"},
		{"a b", "a%20b"},
		{"tab\there", "tab%09here"},
		{"%", "%25"},
		{"%2E", "%252E"},
		{"plant/7/line", "plant%2F7%2Fline"},
		{"~x", "%7Ex"},
		{"é", "%C3%A9"},
		{"设备", "%E8%AE%BE%E5%A4%87"},
		{"emqx@10.0.0.11", "emqx%4010%2E0%2E0%2E11"},
		{long, long},
		{long + "a", hashedToken(long + "a")},
		{strings.Repeat(".", 66), strings.Repeat("%2E", 66)},
		{strings.Repeat(".", 67), hashedToken(strings.Repeat(".", 67))},
	}
	for _, tt := range tests {
		got := events.EncodeToken(tt.id)
		if got != tt.want {
			t.Errorf("EncodeToken(%q) = %q, want %q", tt.id, got, tt.want)
		}
		if !tokenSafe.MatchString(got) {
			t.Errorf("EncodeToken(%q) = %q is not a safe NATS token", tt.id, got)
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	ids := []string{
		"dev-42", "", "a.b.c", "*", ">", "a.*.>", " ", "with space", " lead", "trail ",
		"%", "%%", "%2E", "100%", "a/b/c", "/", "é", "设备-001", "🚀.rocket", "line\nbreak",
		"\x00nul", "~tilde", "MiXeD_case-09", strings.Repeat("x", maxTokenLen),
		strings.Repeat(".", 66), // 198 encoded bytes: still reversible
	}
	for _, id := range ids {
		tok := events.EncodeToken(id)
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Errorf("EncodeToken(%q) = %q contains a NATS special or whitespace", id, tok)
		}
		got, err := events.DecodeToken(tok)
		if err != nil {
			t.Errorf("DecodeToken(EncodeToken(%q) = %q): %v", id, tok, err)
			continue
		}
		if got != id {
			t.Errorf("DecodeToken(EncodeToken(%q)) = %q", id, got)
		}
	}
}

func TestLongIDsAreHashed(t *testing.T) {
	a := strings.Repeat("设", 100) // 300 bytes, 900 encoded
	b := strings.Repeat("设", 99) + "备"
	ta, tb := events.EncodeToken(a), events.EncodeToken(b)
	if ta != hashedToken(a) || tb != hashedToken(b) {
		t.Fatalf("long ids: %q, %q; want ~sha256 hex", ta, tb)
	}
	if len(ta) != 65 {
		t.Fatalf("hashed token %q is %d bytes, want 65", ta, len(ta))
	}
	if ta == tb {
		t.Fatal("two long ids share a token")
	}
	if events.EncodeToken(a) != ta {
		t.Fatal("hashing is not stable")
	}
	if _, err := events.DecodeToken(ta); !errors.Is(err, events.ErrBadToken) {
		t.Fatalf("DecodeToken(hashed) error %v, want ErrBadToken", err)
	}
	// A device id at MaxDeviceIDLen still gets a short subject.
	huge := strings.Repeat(".", events.MaxDeviceIDLen)
	if got := events.EncodeToken(huge); got != hashedToken(huge) {
		t.Fatalf("EncodeToken(65535 dots) = %.80q…", got)
	}
}

func TestDecodeTokenRejects(t *testing.T) {
	for _, tok := range []string{
		"",                            // EncodeToken never yields an empty token
		"~" + strings.Repeat("0", 64), // hashed: not reversible
		"a.b",                         // NATS special
		"a b",                         // whitespace
		"a*", "a>",                    // wildcards
		"é",          // raw non-ASCII
		"%2",         // short escape
		"a%",         // escape at the end
		"%%",         // escape of nothing
		"%zz",        // not hex
		"%2e",        // lowercase hex
		"%41",        // needless escape: "A" encodes as A
		"%5F", "%2D", // needless escapes of _ and -
		strings.Repeat("a", maxTokenLen+1), // EncodeToken would have hashed it
		strings.Repeat("%2E", 67),          // 201 bytes, ditto
		"dev%2E42%G0",                      // bad escape after good ones
	} {
		if got, err := events.DecodeToken(tok); !errors.Is(err, events.ErrBadToken) {
			t.Errorf("DecodeToken(%q) = %q, %v; want ErrBadToken", tok, got, err)
		}
	}
}

func TestDecodeTokenErrorNamesTheToken(t *testing.T) {
	_, err := events.DecodeToken("dev%zz")
	if want := `"dev%zz": bad escape at 3: not an encoded subject token`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestPartition(t *testing.T) {
	// Pinned: FNV-1a 32 of the id, modulo the partition count. These values
	// must never change, or a deployment's devices move between partitions.
	pinned := []struct {
		id         string
		partitions int
		want       int
	}{
		{"dev-42", 64, 37},
		{"dev-42", 8, 5},
		{"dev-1", 64, 54},
		{"dev-2", 64, 35},
		{"a", 64, 44},
		{"", 64, 5},
		{"sensor/7.b*>", 64, 49},
		{"设备-001", 64, 57},
		{"dev-42", 1, 0},
		{"dev-42", 0, 37},  // <= 0 means DefaultPartitions
		{"dev-42", -3, 37}, // ditto
	}
	for _, tt := range pinned {
		if got := events.Partition(tt.id, tt.partitions); got != tt.want {
			t.Errorf("Partition(%q, %d) = %d, want %d", tt.id, tt.partitions, got, tt.want)
		}
	}
	for _, p := range []int{1, 2, 7, 64, 1000} {
		seen := map[int]bool{}
		for i := range 2000 {
			id := "dev-" + string(rune('a'+i%26)) + strings.Repeat("x", i%37) + string(rune(i))
			got := events.Partition(id, p)
			if got < 0 || got >= p {
				t.Fatalf("Partition(%q, %d) = %d, out of range", id, p, got)
			}
			if again := events.Partition(id, p); again != got {
				t.Fatalf("Partition(%q, %d) is not stable: %d then %d", id, p, got, again)
			}
			seen[got] = true
		}
		if p <= 64 && len(seen) != p {
			t.Errorf("2000 ids hit %d of %d partitions", len(seen), p)
		}
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{events.PresenceSubject("dev-42", 64), "presence.v1.37.dev-42"},
		{events.PresenceSubject("dev-42", 0), "presence.v1.37.dev-42"},
		{events.PresenceSubject("sensor/7.b*>", 64), "presence.v1.49.sensor%2F7%2Eb%2A%3E"},
		{events.PresenceSubject("", 64), "presence.v1.5.%"},
		{events.PresencePartitionFilter(37), "presence.v1.37.*"},
		{events.AlertSubject("ops-dingtalk"), "alerts.v1.ops-dingtalk"},
		{events.DeliverySubject("ops-feishu"), "deliveries.v1.ops-feishu"},
		{events.DeadLetterSubject("ingest", "emqx_sys_v5"), "deadletter.v1.ingest.emqx_sys_v5"},
		{events.DeadLetterSubject("ingest", "webhook v4.x"), "deadletter.v1.ingest.webhook%20v4%2Ex"},
		{events.DeadLetterSubject("", ""), "deadletter.v1.%.%"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("subject %q, want %q", tt.got, tt.want)
		}
	}
	e := validPresence()
	if got, want := e.Subject(8), "presence.v1.5.dev-42"; got != want {
		t.Errorf("PresenceEvent.Subject(8) = %q, want %q", got, want)
	}
}

func TestContentID(t *testing.T) {
	// Pinned: the ids of released content must never change.
	pinned := []struct {
		parts []string
		want  string
	}{
		{nil, "e3b0c44298fc1c149afbf4c8996fb924"},
		{[]string{""}, "6e340b9cffb37a989ca544e6bb780a2c"},
		{[]string{"a", "b"}, "8fb20ef63ced4145fc2e983ffe597d1d"},
		{[]string{"presence.v1", "emqx@10.0.0.11", "dev-42", "connected", "1718000000123", "1718000000123", "0"}, "39fc6fe3b316a9a0cfc7775fbdc25e9a"},
	}
	for _, tt := range pinned {
		if got := events.ContentID(tt.parts...); got != tt.want {
			t.Errorf("ContentID(%q) = %q, want %q", tt.parts, got, tt.want)
		}
	}
	// Part boundaries matter, also when a part holds the separator bytes.
	distinct := [][]string{
		{"ab", "c"}, {"a", "bc"}, {"abc"}, {"abc", ""}, {"", "abc"},
		{"a\x00b", "c"}, {"a", "b\x00c"}, {"a\x00", "b"}, {"a", "\x00b"},
		{"a\x01", "b"}, {"a\x01\x00b"}, {"a\x01", "\x00b"}, {"a", "\x01\x00b"},
		{"\x00"}, {"", ""}, {"\x01"},
	}
	seen := map[string][]string{}
	for _, parts := range distinct {
		id := events.ContentID(parts...)
		if len(id) != 32 {
			t.Fatalf("ContentID(%q) = %q is not 32 hex characters", parts, id)
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("ContentID(%q) == ContentID(%q) = %s", parts, prev, id)
		}
		seen[id] = parts
	}
}

// fuzzSeeds are ids and names seen in the fixtures (shared/fixtures/emqx and
// chat) plus the awkward characters the contracts call out.
var fuzzSeeds = []string{
	"dev-42", "alice", "emqx@10.0.0.11", "203.0.113.7:50312",
	"$SYS/brokers/emqx@10.0.0.11/clients/dev-42/connected", "$events/client_disconnected",
	"$aws/events/presence/disconnected/dev-42", "5f0e6a3c-2b1d-4c8e-9a7f-1e2d3c4b5a69",
	"presence_rule", "ops-dingtalk", "告警 [FIRING:2] HighCPU prod", "a.b*c>d e%f/g",
	"", "%", "~", "%41", "\x00\xff", strings.Repeat("设", 70),
}

func FuzzEncodeToken(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := events.EncodeToken(id)
		if !tokenSafe.MatchString(tok) {
			t.Fatalf("EncodeToken(%q) = %q is not a safe NATS token", id, tok)
		}
		if len(tok) > maxTokenLen {
			t.Fatalf("EncodeToken(%q) is %d bytes, over %d", id, len(tok), maxTokenLen)
		}
		if events.EncodeToken(id) != tok {
			t.Fatalf("EncodeToken(%q) is not deterministic", id)
		}
		if strings.HasPrefix(tok, "~") {
			if tok != hashedToken(id) {
				t.Fatalf("EncodeToken(%q) = %q, want the sha256 token", id, tok)
			}
			return
		}
		got, err := events.DecodeToken(tok)
		if err != nil {
			t.Fatalf("DecodeToken(%q) (from %q): %v", tok, id, err)
		}
		if got != id {
			t.Fatalf("round trip of %q gave %q", id, got)
		}
	})
}

func FuzzDecodeToken(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
		f.Add(events.EncodeToken(s))
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := events.DecodeToken(tok)
		if err != nil {
			if !errors.Is(err, events.ErrBadToken) {
				t.Fatalf("DecodeToken(%q) error %v does not wrap ErrBadToken", tok, err)
			}
			return
		}
		// Every accepted token is the one EncodeToken gives its id: one id,
		// one subject.
		if again := events.EncodeToken(id); again != tok {
			t.Fatalf("DecodeToken(%q) = %q, which encodes to %q", tok, id, again)
		}
		if !utf8.ValidString(tok) {
			t.Fatalf("accepted non-UTF-8 token %q", tok)
		}
	})
}

// The stack-buffer id derivation must equal the plain definition: SHA-256 of
// each part with 0x00/0x01 escaped by 0x01, NUL-terminated, first 128 bits hex.
func TestContentIDDefinition(t *testing.T) {
	plain := func(parts ...string) string {
		var in []byte
		for _, p := range parts {
			for i := 0; i < len(p); i++ {
				if p[i] == 0 || p[i] == 1 {
					in = append(in, 1)
				}
				in = append(in, p[i])
			}
			in = append(in, 0)
		}
		sum := sha256.Sum256(in)
		return hex.EncodeToString(sum[:16])
	}
	long := strings.Repeat("x\x00y\x01", 100) // outgrows the stack buffer
	for _, parts := range [][]string{{}, {""}, {"a", "b"}, {"a\x00b", "\x01"}, {long, "z"}} {
		if got, want := events.ContentID(parts...), plain(parts...); got != want {
			t.Errorf("ContentID(%q) = %s, want %s", parts, got, want)
		}
	}
	e := events.PresenceEvent{Node: "n\x00", DeviceID: long, Kind: events.KindConnected, BrokerTSMS: -5, ConnectedAtMS: 7, ConnVersion: 3}
	if got, want := events.PresenceID(e), plain("presence.v1", e.Node, e.DeviceID, string(e.Kind), "-5", "7", "3"); got != want {
		t.Errorf("PresenceID = %s, want %s", got, want)
	}
}

func BenchmarkPresenceID(b *testing.B) {
	e := events.PresenceEvent{Node: "emqx@10.0.0.11", DeviceID: "dev-42", Kind: events.KindDisconnected, BrokerTSMS: 1718000300411, ConnectedAtMS: 1718000000123}
	b.ReportAllocs()
	for b.Loop() {
		_ = events.PresenceID(e)
	}
}
