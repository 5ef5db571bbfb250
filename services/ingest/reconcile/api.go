// Package reconcile repairs presence after missed events: it pages through
// the EMQX v5 REST API's client list (GET /api/v5/clients), compares the
// broker's truth with the last event stored for each device, and says which
// corrective events to emit. Decide and DecideAbsent are pure; API is the
// HTTP client; Reconciler runs one pass over both with the I/O injected.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/ingest/internal/field"
)

// Client is one row of the EMQX v5 client list (fields fleetwatch reads).
type Client struct {
	ClientID         string
	Node             string
	Connected        bool
	ConnectedAtMS    int64
	DisconnectedAtMS int64 // 0 when connected or unknown
	Username         string
	IP               string
	ProtoVer         int
	KeepaliveS       int
}

// ErrNotFound is returned by API.Get for a client id EMQX does not know.
var ErrNotFound = errors.New("client not found")

// maxResponse bounds one response body.
const maxResponse = 64 << 20

// API is a client of EMQX's v5 REST API, authenticated with an API key and
// secret (basic auth).
type API struct {
	base   *url.URL
	key    string
	secret string // never logged
	http   *http.Client
}

// NewAPI returns a client for the API at base (e.g. http://emqx:18083).
func NewAPI(base, key, secret string, hc *http.Client) (*API, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("ingest.reconcile.url %q is not an http(s) URL: use e.g. http://emqx:18083", base)
	}
	if u.User != nil {
		return nil, errors.New("ingest.reconcile.url must not contain credentials: set api_key and api_secret_file")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &API{base: u, key: key, secret: secret, http: hc}, nil
}

type listResponse struct {
	Data []row `json:"data"`
	Meta struct {
		Page    int  `json:"page"`
		Limit   int  `json:"limit"`
		Count   int  `json:"count"`
		HasNext bool `json:"hasnext"`
	} `json:"meta"`
}

type row struct {
	ClientID       json.RawMessage `json:"clientid"`
	Node           json.RawMessage `json:"node"`
	Connected      json.RawMessage `json:"connected"`
	ConnectedAt    json.RawMessage `json:"connected_at"`
	DisconnectedAt json.RawMessage `json:"disconnected_at"`
	Username       json.RawMessage `json:"username"`
	IPAddress      json.RawMessage `json:"ip_address"`
	ProtoVer       json.RawMessage `json:"proto_ver"`
	Keepalive      json.RawMessage `json:"keepalive"`
}

// Page fetches one page (1-based) of the client list.
func (a *API) Page(ctx context.Context, page, limit int) (clients []Client, hasNext bool, err error) {
	q := url.Values{"page": {strconv.Itoa(page)}, "limit": {strconv.Itoa(limit)}}
	var resp listResponse
	if err := a.get(ctx, "/api/v5/clients?"+q.Encode(), &resp); err != nil {
		return nil, false, err
	}
	out := make([]Client, 0, len(resp.Data))
	for i, r := range resp.Data {
		c, err := r.client()
		if err != nil {
			return nil, false, fmt.Errorf("emqx api: clients page %d row %d: %w", page, i, err)
		}
		out = append(out, c)
	}
	return out, resp.Meta.HasNext, nil
}

// Get fetches one client (GET /api/v5/clients/{clientid}); ErrNotFound
// when EMQX does not know it.
func (a *API) Get(ctx context.Context, clientID string) (Client, error) {
	var r row
	if err := a.get(ctx, "/api/v5/clients/"+url.PathEscape(clientID), &r); err != nil {
		return Client{}, err
	}
	c, err := r.client()
	if err != nil {
		return Client{}, fmt.Errorf("emqx api: client %q: %w", clientID, err)
	}
	return c, nil
}

func (a *API) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base.String()+path, nil)
	if err != nil {
		return fmt.Errorf("emqx api: %w", err)
	}
	req.SetBasicAuth(a.key, a.secret)
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("emqx api: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("emqx api: read %s: %w", req.URL.Path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return ErrNotFound
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("emqx api: %s: 401 unauthorized: check ingest.reconcile.api_key and the secret", req.URL.Path)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("emqx api: %s: status %d: %.200s", req.URL.Path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("emqx api: %s: %w", req.URL.Path, err)
	}
	return nil
}

func (r row) client() (Client, error) {
	var c Client
	var err error
	if c.ClientID, err = field.String(r.ClientID, "clientid", false); err != nil {
		return c, err
	}
	if c.ClientID == "" {
		return c, errors.New("clientid is missing")
	}
	if c.Node, err = field.String(r.Node, "node", true); err != nil {
		return c, err
	}
	if c.Connected, _, err = field.Bool(r.Connected, "connected"); err != nil {
		return c, err
	}
	if c.ConnectedAtMS, err = apiTime(r.ConnectedAt, "connected_at"); err != nil {
		return c, err
	}
	if c.DisconnectedAtMS, err = apiTime(r.DisconnectedAt, "disconnected_at"); err != nil {
		return c, err
	}
	if c.Username, err = field.String(r.Username, "username", true); err != nil {
		return c, err
	}
	if c.IP, err = field.String(r.IPAddress, "ip_address", true); err != nil {
		return c, err
	}
	if c.ProtoVer, err = field.ProtoVer(r.ProtoVer); err != nil {
		return c, err
	}
	if c.KeepaliveS, err = field.Keepalive(r.Keepalive); err != nil {
		return c, err
	}
	return c, nil
}

// apiTime reads a REST API time: EMQX v5 renders it as RFC 3339 with
// milliseconds ("2024-06-10T06:13:20.123+00:00"); epoch ms is accepted too.
func apiTime(raw json.RawMessage, name string) (int64, error) {
	if !field.Present(raw) {
		return 0, nil
	}
	if raw[0] != '"' {
		v, _, err := field.TimeMS(raw, name)
		return v, err
	}
	s, err := field.String(raw, name, true)
	if err != nil || s == "" {
		return 0, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not an RFC 3339 time", name, s)
	}
	v, _, err := field.Time(t.UnixMilli(), name)
	return v, err
}
