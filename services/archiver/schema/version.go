package schema

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Version is a ClickHouse server version such as 18.16.1 or 24.8.4.13.
type Version struct {
	Major, Minor, Patch int
}

// ParseVersion parses the text of SELECT version(). Only the first three
// numbers are kept; a missing patch number is 0.
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("clickhouse version %q: want major.minor[.patch...]", s)
	}
	var nums [3]int
	for i := 0; i < 3 && i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < 0 {
			return Version{}, fmt.Errorf("clickhouse version %q: part %d is not a number", s, i+1)
		}
		nums[i] = n
	}
	return Version{Major: nums[0], Minor: nums[1], Patch: nums[2]}, nil
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// String formats v as major.minor.patch.
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Capabilities says which optional ClickHouse features a server has. The
// thresholds are the first release where the feature is usable without
// experimental settings; they are deliberately conservative.
type Capabilities struct {
	// Version is the server version they were derived from.
	Version Version
	// LowCardinality: LowCardinality(String) columns (production-ready in 19.3).
	LowCardinality bool
	// Codecs: per-column compression codecs such as CODEC(Delta, ZSTD) (19.10).
	Codecs bool
	// TTL: table and column TTL expressions (19.6).
	TTL bool
	// DateTime64: sub-second DateTime64 columns (20.1).
	DateTime64 bool
}

// CapabilitiesOf derives the capabilities of a server version.
func CapabilitiesOf(v Version) Capabilities {
	return Capabilities{
		Version:        v,
		LowCardinality: v.AtLeast(19, 3),
		Codecs:         v.AtLeast(19, 10),
		TTL:            v.AtLeast(19, 6),
		DateTime64:     v.AtLeast(20, 1),
	}
}

// Detect asks the server for its version (SELECT version()) and derives its
// capabilities.
func Detect(ctx context.Context, conn Conn) (Capabilities, error) {
	var text string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&text); err != nil {
		return Capabilities{}, fmt.Errorf("detect clickhouse version: %w", err)
	}
	v, err := ParseVersion(text)
	if err != nil {
		return Capabilities{}, err
	}
	return CapabilitiesOf(v), nil
}
