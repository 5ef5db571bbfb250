package notify

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Number reads a JSON number or a numeric string, such as the remote's
// errcode or code.
func Number(raw json.RawMessage) (int64, bool) {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// EncodeJSON encodes v as compact JSON without HTML escaping and without
// the trailing newline.
func EncodeJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}
