package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Key names in the bucket.
const (
	partitionPrefix = "p."
	memberPrefix    = "m."
)

func partitionKey(p int) string { return partitionPrefix + strconv.Itoa(p) }

func memberKey(replica string) string { return memberPrefix + replica }

// parsePartitionKey returns the partition of a "p.<n>" key below partitions.
func parsePartitionKey(key string, partitions int) (int, bool) {
	s, ok := strings.CutPrefix(key, partitionPrefix)
	if !ok || s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p >= partitions {
		return 0, false
	}
	return p, true
}

// record is the value of a lease key (p.<n>) and of a membership key
// (m.<replica>). Only Owner, Instance and Epoch are relied upon; the rest is
// for operators reading the bucket (nats kv get).
type record struct {
	// Owner is the replica name.
	Owner string `json:"owner"`
	// Instance identifies one run of a Manager (random), so that a restarted
	// replica with the same name never mistakes its predecessor's leases for
	// its own.
	Instance string `json:"instance"`
	// Epoch is the lease's fencing token: the revision at which it was
	// claimed. The claiming write itself carries 0 (its revision is only
	// known once written); every renewal carries it.
	Epoch uint64 `json:"epoch,omitempty"`
	// Joining marks a member that started less than one renewal interval ago
	// and does not own partitions yet: others do not hand partitions over to
	// it until it has seen the membership (membership keys only).
	Joining bool `json:"joining,omitempty"`
	// Partitions is the member's partition count, to detect a deployment
	// whose replicas disagree (membership keys only).
	Partitions int `json:"partitions,omitempty"`
	// TTLMillis is the TTL the writer gave the key.
	TTLMillis int64 `json:"ttl_ms"`
	// WrittenMillis is the writer's wall clock at the write (Unix ms); no
	// decision depends on it.
	WrittenMillis int64 `json:"written_ms"`
}

// errBadRecord is returned by decodeRecord for values no Manager wrote.
var errBadRecord = errors.New("not a lease record")

func (r record) encode() []byte {
	// A struct of strings, integers and booleans always marshals.
	b, _ := json.Marshal(r)
	return b
}

// decodeRecord parses a lease or membership value. Unknown fields are
// ignored, so that a newer replica may add some during a rolling upgrade.
func decodeRecord(b []byte) (record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	if r.Owner == "" || r.Instance == "" {
		return record{}, fmt.Errorf("%w: owner or instance missing", errBadRecord)
	}
	return r, nil
}
