package lease

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

func TestQuota(t *testing.T) {
	for _, tc := range []struct {
		members    []string
		partitions int
		want       []int
	}{
		{[]string{"a"}, 64, []int{64}},
		{[]string{"a", "b"}, 64, []int{32, 32}},
		{[]string{"a", "b", "c"}, 64, []int{22, 21, 21}},
		{[]string{"a", "b", "c"}, 16, []int{6, 5, 5}},
		{[]string{"a", "b", "c", "d", "e"}, 3, []int{1, 1, 1, 0, 0}},
	} {
		var got []int
		total := 0
		for _, m := range tc.members {
			q := quota(m, tc.members, tc.partitions)
			got = append(got, q)
			total += q
		}
		if !slices.Equal(got, tc.want) || total != tc.partitions {
			t.Errorf("quota(%v, %d) = %v, want %v", tc.members, tc.partitions, got, tc.want)
		}
	}
	if q := quota("z", []string{"a", "b"}, 64); q != 0 {
		t.Fatalf("quota of a non-member = %d", q)
	}
}

func TestByPreference(t *testing.T) {
	ps := []int{0, 1, 2, 3, 4, 5, 6, 7}
	a, b := slices.Clone(ps), slices.Clone(ps)
	byPreference("r1", a)
	byPreference("r2", b)
	if slices.Equal(a, b) {
		t.Fatalf("r1 and r2 prefer the same order %v", a)
	}
	again := slices.Clone(ps)
	byPreference("r1", again)
	if !slices.Equal(a, again) {
		t.Fatalf("order not stable: %v then %v", a, again)
	}
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	if !slices.Equal(sorted, ps) {
		t.Fatalf("byPreference lost partitions: %v", a)
	}
	for i := 1; i < len(a); i++ {
		if score("r1", a[i-1]) < score("r1", a[i]) {
			t.Fatalf("not by descending score: %v", a)
		}
	}
}

func TestParsePartitionKey(t *testing.T) {
	for key, want := range map[string]int{"p.0": 0, "p.7": 7, "p.63": 63} {
		if p, ok := parsePartitionKey(key, 64); !ok || p != want {
			t.Errorf("%s: %d, %v", key, p, ok)
		}
	}
	for _, key := range []string{"p.", "p.64", "p.-1", "p.07", "p.x", "m.r1", "p.1.2", ""} {
		if p, ok := parsePartitionKey(key, 64); ok {
			t.Errorf("%s parsed as %d", key, p)
		}
	}
	if partitionKey(12) != "p.12" || memberKey("r1") != "m.r1" {
		t.Fatal("key names")
	}
}

func TestDecodeRecord(t *testing.T) {
	r := record{Owner: "r1", Instance: "abc", Epoch: 7, Joining: true, Partitions: 64, TTLMillis: 10000, WrittenMillis: 1}
	got, err := decodeRecord(r.encode())
	if err != nil || got != r {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if got, err := decodeRecord([]byte(`{"owner":"r1","instance":"abc","ttl_ms":1,"written_ms":2,"later":true}`)); err != nil || got.Owner != "r1" {
		t.Fatalf("unknown field: %+v, %v", got, err)
	}
	for _, in := range []string{``, `{}`, `{"owner":"r1"}`, `{"instance":"x"}`, `[]`, `{"owner":1,"instance":"x"}`} {
		if _, err := decodeRecord([]byte(in)); err == nil {
			t.Errorf("%q decoded", in)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"owner":"r1","instance":"abc","epoch":7,"ttl_ms":10000,"written_ms":1}`))
	f.Add([]byte(`{"owner":"r1","instance":"abc","joining":true,"partitions":64}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if r.Owner == "" || r.Instance == "" {
			t.Fatalf("accepted %+v", r)
		}
		back, err := decodeRecord(r.encode())
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("re-encoding %+v gives %+v, %v", r, back, err)
		}
		var v map[string]any
		if err := json.Unmarshal(r.encode(), &v); err != nil {
			t.Fatal(err)
		}
	})
}
