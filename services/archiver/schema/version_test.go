package schema

import (
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{in: "18.16.1", want: Version{18, 16, 1}},
		{in: "24.8.4.13", want: Version{24, 8, 4}},
		{in: " 23.3 ", want: Version{23, 3, 0}},
		{in: "25.10.1.3832-testing", want: Version{25, 10, 1}},
		{in: "18", wantErr: true},
		{in: "", wantErr: true},
		{in: "a.b.c", wantErr: true},
		{in: "1.-2.3", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseVersion(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseVersion(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestCapabilitiesOf(t *testing.T) {
	tests := []struct {
		v    Version
		want Capabilities
	}{
		{v: Version{18, 16, 1}, want: Capabilities{}},
		{v: Version{19, 3, 0}, want: Capabilities{LowCardinality: true}},
		{v: Version{19, 6, 0}, want: Capabilities{LowCardinality: true, TTL: true}},
		{v: Version{19, 10, 0}, want: Capabilities{LowCardinality: true, TTL: true, Codecs: true}},
		{v: Version{20, 1, 2}, want: Capabilities{LowCardinality: true, TTL: true, Codecs: true, DateTime64: true}},
		{v: Version{24, 8, 4}, want: Capabilities{LowCardinality: true, TTL: true, Codecs: true, DateTime64: true}},
	}
	for _, tt := range tests {
		tt.want.Version = tt.v
		if got := CapabilitiesOf(tt.v); got != tt.want {
			t.Errorf("CapabilitiesOf(%v) = %+v, want %+v", tt.v, got, tt.want)
		}
	}
}

func TestCheckDatabaseName(t *testing.T) {
	for _, ok := range []string{"fleetwatch", "_x", "fw_2024", "A1"} {
		if err := CheckDatabaseName(ok); err != nil {
			t.Errorf("CheckDatabaseName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "1fw", "fleet-watch", "fw.x", "fw; DROP", "`fw`", "fé"} {
		if err := CheckDatabaseName(bad); err == nil {
			t.Errorf("CheckDatabaseName(%q) = nil, want an error", bad)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"18.16.1", "24.8.4.13", "23.3", "1", "", "x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		if v.Major < 0 || v.Minor < 0 || v.Patch < 0 {
			t.Fatalf("ParseVersion(%q) = %v: negative part", s, v)
		}
		again, err := ParseVersion(v.String())
		if err != nil || again != v {
			t.Fatalf("ParseVersion(%q) = %v does not round-trip: %v, %v", s, v, again, err)
		}
	})
}
