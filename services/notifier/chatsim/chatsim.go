// Package chatsim runs strict local stand-ins for the DingTalk custom robot,
// the Feishu (Lark) custom bot, the WeCom group robot, the Slack incoming
// webhook and a generic signed JSON webhook, as described in
// shared/contracts/chat.md: the same paths, signatures, keyword checks, size
// and rate limits, and the same answers (HTTP 200 with a body code) as the
// real services. Tests point notifiers at it; `make run` serves it as the
// inbox page that shows what would have been sent.
//
// A Server records every accepted message and counts every rejection by
// code. Time comes from Config.Now so tests can move the clock.
package chatsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Channel names a simulated chat service.
type Channel string

// Simulated channels.
const (
	DingTalk Channel = "dingtalk"
	Feishu   Channel = "feishu"
	WeCom    Channel = "wecom"
	Slack    Channel = "slack"
	Webhook  Channel = "webhook"
)

// Limits enforced by the simulated services (contracts/chat.md).
const (
	// MaxBodyBytes is the largest request body either service accepts.
	MaxBodyBytes = 20000
	// DingTalkPerMinute is the DingTalk robot's rolling-minute limit.
	DingTalkPerMinute = 20
	// DingTalkBlock is how long a DingTalk robot stays blocked after the
	// request over the limit.
	DingTalkBlock = 10 * time.Minute
	// FeishuPerSecond and FeishuPerMinute are the Feishu bot's limits.
	FeishuPerSecond = 5
	FeishuPerMinute = 100
	// MaxClockSkew is how far a signed request's timestamp may be from the
	// server's clock.
	MaxClockSkew = time.Hour
)

// Robot configures one DingTalk robot or Feishu bot. At least one security
// mode (Secret, Keywords, AllowedIPs) is normally set, as on the real
// services; chatsim does not insist.
type Robot struct {
	// Name labels the robot in the inbox and in Message.Robot (defaults to
	// Token).
	Name string `json:"name"`
	// Token is the DingTalk access_token or the Feishu hook token.
	Token string `json:"-"`
	// Secret turns on signature checking (DingTalk secrets start with SEC).
	Secret string `json:"-"`
	// Keywords turns on the keyword check: a message must contain one.
	Keywords []string `json:"keywords,omitempty"`
	// AllowedIPs turns on the IP allowlist: the client's IP must be listed.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// Archived (Slack) answers 410 channel_is_archived.
	Archived bool `json:"archived,omitempty"`
	// ChannelNotFound (Slack) answers 404 channel_not_found.
	ChannelNotFound bool `json:"channel_not_found,omitempty"`
}

func (r Robot) name() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Token
}

// Config configures a Server.
type Config struct {
	// DingTalk robots, served at POST /robot/send?access_token=TOKEN.
	DingTalk []Robot
	// Feishu bots, served at POST /open-apis/bot/v2/hook/TOKEN.
	Feishu []Robot
	// WeCom robots, served at POST /cgi-bin/webhook/send?key=TOKEN.
	WeCom []Robot
	// Slack incoming webhooks, served at POST /services/TOKEN, where TOKEN
	// is "T…/B…/secret" as in Slack's URLs.
	Slack []Robot
	// Webhook receivers, served at POST /webhook/TOKEN; a Secret turns on
	// the HMAC signature check.
	Webhook []Robot
	// Now is the server clock (default time.Now).
	Now func() time.Time
	// Keep bounds the messages and rejections kept for the inbox (default 1000).
	Keep int
	// Unlimited turns the rate limits off (benchmarks of the senders).
	Unlimited bool
}

// Message is one accepted message.
type Message struct {
	// Seq numbers accepted messages from 1.
	Seq int64 `json:"seq"`
	// Channel is dingtalk or feishu.
	Channel Channel `json:"channel"`
	// Robot is the robot's name.
	Robot string `json:"robot"`
	// At is the server time of acceptance.
	At time.Time `json:"at"`
	// MsgType is the DingTalk msgtype or Feishu msg_type.
	MsgType string `json:"msg_type"`
	// Title and Text are a human-readable rendering of the message.
	Title string `json:"title"`
	Text  string `json:"text"`
	// Color is the Feishu card header template, if any.
	Color string `json:"color,omitempty"`
	// Mentions are the mentions that would notify someone: DingTalk
	// atMobiles/atUserIds whose "@…" appears in the text, "all" for
	// isAtAll or a Feishu <at id=all>, Feishu user ids.
	Mentions []string `json:"mentions,omitempty"`
	// SilentMentions are DingTalk mentions listed in "at" whose "@…" is
	// missing from the text, or that an actionCard carries (DingTalk
	// mentions in text and markdown only): DingTalk notifies nobody.
	SilentMentions []string `json:"silent_mentions,omitempty"`
	// MsgUUID is DingTalk's idempotency key, if sent.
	MsgUUID string `json:"msg_uuid,omitempty"`
	// Signed reports whether the request carried a valid signature.
	Signed bool `json:"signed"`
	// Bytes is the size of the request body.
	Bytes int `json:"bytes"`
	// Body is the request body as received.
	Body json.RawMessage `json:"body"`
}

// Rejection is one request answered with an error.
type Rejection struct {
	Seq     int64     `json:"seq"`
	Channel Channel   `json:"channel"`
	Robot   string    `json:"robot"`
	At      time.Time `json:"at"`
	// HTTPStatus is the status answered (200 for business errors).
	HTTPStatus int `json:"http_status"`
	// Code and Msg are the errcode/errmsg (DingTalk) or code/msg (Feishu)
	// answered; Code is 0 for an injected HTTP failure.
	Code int    `json:"code"`
	Msg  string `json:"msg"`
	// Detail says what exactly was wrong (chatsim's own words; not sent).
	Detail string `json:"detail,omitempty"`
}

type robotState struct {
	channel Channel
	robot   Robot
	// admitted are the times of requests counted by the rate limit.
	admitted     []time.Time
	blockedUntil time.Time
	msgUUIDs     map[string]bool
	faults       []int // HTTP statuses to answer to the next requests
}

// Server is a simulated DingTalk and Feishu webhook endpoint. It implements
// http.Handler; Start serves it on a local address.
type Server struct {
	now       func() time.Time
	keep      int
	unlimited bool
	mux       *http.ServeMux

	mu         sync.Mutex
	robots     map[Channel]map[string]*robotState
	messages   []Message
	rejections []Rejection
	counts     map[Channel]map[int]int
	requests   int
	duplicates int
	seq        int64
	rseq       int64
	changed    chan struct{}

	srv *http.Server
	url string
}

// New returns a server for the configured robots.
func New(cfg Config) *Server {
	s := &Server{
		now:       cfg.Now,
		keep:      cfg.Keep,
		unlimited: cfg.Unlimited,
		robots:    map[Channel]map[string]*robotState{DingTalk: {}, Feishu: {}, WeCom: {}, Slack: {}, Webhook: {}},
		counts:    map[Channel]map[int]int{DingTalk: {}, Feishu: {}, WeCom: {}, Slack: {}, Webhook: {}},
		changed:   make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.keep <= 0 {
		s.keep = 1000
	}
	for _, r := range cfg.DingTalk {
		s.AddRobot(DingTalk, r)
	}
	for _, r := range cfg.Feishu {
		s.AddRobot(Feishu, r)
	}
	for _, r := range cfg.WeCom {
		s.AddRobot(WeCom, r)
	}
	for _, r := range cfg.Slack {
		s.AddRobot(Slack, r)
	}
	for _, r := range cfg.Webhook {
		s.AddRobot(Webhook, r)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /robot/send", serve(s.dingTalk))
	s.mux.HandleFunc("POST /open-apis/bot/v2/hook/{token}", serve(s.feishu))
	s.mux.HandleFunc("POST /cgi-bin/webhook/send", serve(s.weCom))
	s.mux.HandleFunc("POST /services/{token...}", serve(s.slack))
	s.mux.HandleFunc("POST /webhook/{token}", serve(s.webhook))
	s.mux.HandleFunc("GET /{$}", s.serveInbox)
	s.mux.HandleFunc("GET /api/messages", s.serveAPI)
	return s
}

// AddRobot adds (or replaces) a robot.
func (s *Server) AddRobot(ch Channel, r Robot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.robots[ch][r.Token] = &robotState{channel: ch, robot: r, msgUUIDs: map[string]bool{}}
}

// ServeHTTP serves the webhook endpoints and the inbox.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start serves on addr (e.g. "127.0.0.1:0") in the background.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("chatsim listen on %s: %w", addr, err)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	s.url = "http://" + ln.Addr().String()
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

// Close stops a server started with Start.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// URL is the base URL of a started server ("" before Start).
func (s *Server) URL() string { return s.url }

// DingTalkURL is the whole webhook URL of a DingTalk robot, as users paste it.
func (s *Server) DingTalkURL(token string) string {
	return s.url + "/robot/send?access_token=" + token
}

// FeishuURL is the whole webhook URL of a Feishu bot.
func (s *Server) FeishuURL(token string) string {
	return s.url + "/open-apis/bot/v2/hook/" + token
}

// WeComURL is the whole webhook URL of a WeCom robot.
func (s *Server) WeComURL(key string) string {
	return s.url + "/cgi-bin/webhook/send?key=" + key
}

// SlackURL is the whole incoming-webhook URL of a Slack webhook.
func (s *Server) SlackURL(token string) string {
	return s.url + "/services/" + token
}

// WebhookURL is the URL of a generic webhook receiver.
func (s *Server) WebhookURL(token string) string {
	return s.url + "/webhook/" + token
}

// FailNext makes the next n requests to a robot (after the token check)
// answer the HTTP status with no business processing, like a failing proxy.
func (s *Server) FailNext(ch Channel, token string, n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.robots[ch][token]; st != nil {
		for range n {
			st.faults = append(st.faults, status)
		}
	}
}

// Messages returns the accepted messages (the last Keep), oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages[max(len(s.messages)-s.keep, 0):]...)
}

// MessagesTo returns the accepted messages of one robot (by name), oldest first.
func (s *Server) MessagesTo(robot string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.Robot == robot {
			out = append(out, m)
		}
	}
	return out
}

// Rejections returns the rejected requests (the last Keep), oldest first.
func (s *Server) Rejections() []Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Rejection(nil), s.rejections[max(len(s.rejections)-s.keep, 0):]...)
}

// RejectionCount is how many requests were answered with code on ch.
func (s *Server) RejectionCount(ch Channel, code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[ch][code]
}

// RejectionCounts returns the rejection counts by channel and code.
func (s *Server) RejectionCounts() map[Channel]map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[Channel]map[int]int{}
	for ch, m := range s.counts {
		out[ch] = map[int]int{}
		for c, n := range m {
			out[ch][c] = n
		}
	}
	return out
}

// Requests is the number of webhook requests received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Duplicates is the number of DingTalk requests answered ok without a new
// message because their msgUuid was already accepted.
func (s *Server) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duplicates
}

// WaitFor blocks until match accepts the accepted messages (oldest first)
// or ctx ends. It re-checks after every request.
func (s *Server) WaitFor(ctx context.Context, match func([]Message) bool) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.messages[max(len(s.messages)-s.keep, 0):]...)
		changed := s.changed
		s.mu.Unlock()
		if match(msgs) {
			return msgs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return msgs, fmt.Errorf("chatsim: waiting for messages (have %d): %w", len(msgs), ctx.Err())
		}
	}
}

// WaitForMessages blocks until at least n messages were accepted.
func (s *Server) WaitForMessages(ctx context.Context, n int) ([]Message, error) {
	return s.WaitFor(ctx, func(m []Message) bool { return len(m) >= n })
}

// WaitForRejections blocks until at least n requests were rejected.
func (s *Server) WaitForRejections(ctx context.Context, n int) ([]Rejection, error) {
	for {
		s.mu.Lock()
		rs := append([]Rejection(nil), s.rejections[max(len(s.rejections)-s.keep, 0):]...)
		changed := s.changed
		s.mu.Unlock()
		if len(rs) >= n {
			return rs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return rs, fmt.Errorf("chatsim: waiting for %d rejections (have %d): %w", n, len(rs), ctx.Err())
		}
	}
}

// notifyLocked wakes waiters; s.mu is held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) acceptLocked(m Message) {
	s.seq++
	m.Seq = s.seq
	s.messages = append(s.messages, m)
	if len(s.messages) > 2*s.keep {
		// Trim in bulk: copying on every message would cost O(keep) each.
		s.messages = append([]Message(nil), s.messages[len(s.messages)-s.keep:]...)
	}
	s.notifyLocked()
}

func (s *Server) rejectLocked(rj Rejection) {
	s.rseq++
	rj.Seq = s.rseq
	s.counts[rj.Channel][rj.Code]++
	s.rejections = append(s.rejections, rj)
	if len(s.rejections) > 2*s.keep {
		s.rejections = append([]Rejection(nil), s.rejections[len(s.rejections)-s.keep:]...)
	}
	s.notifyLocked()
}

// serve reads a webhook request's body (at most MaxBodyBytes+1 bytes) and
// writes the answer of handle.
func serve(handle func(r *http.Request, body []byte, readErr error) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, readErr := readBody(r)
		handle(r, body, readErr).write(w)
	}
}

// request is one webhook request being answered. It holds s.mu from open
// to close.
type request struct {
	s   *Server
	ch  Channel
	now time.Time
	// st is the addressed robot, nil for an unknown token.
	st *robotState
}

// open takes the server's time, locks the server, counts the request and
// finds the robot of token on ch.
func (s *Server) open(ch Channel, token string) *request {
	now := s.now()
	s.mu.Lock()
	s.requests++
	return &request{s: s, ch: ch, now: now, st: s.robots[ch][token]}
}

// close unlocks the server.
func (q *request) close() { q.s.mu.Unlock() }

// reject records a rejection answered with the HTTP status and the
// remote's code and msg; detail says what exactly was wrong.
func (q *request) reject(status, code int, msg, detail string) {
	robot := "(unknown)"
	if q.st != nil {
		robot = q.st.robot.name()
	}
	q.s.rejectLocked(Rejection{Channel: q.ch, Robot: robot, At: q.now, HTTPStatus: status, Code: code, Msg: msg, Detail: detail})
}

// errcode rejects as DingTalk and WeCom do: HTTP 200 with
// {"errcode":code,"errmsg":msg}.
func (q *request) errcode(code int, msg, detail string) answer {
	q.reject(http.StatusOK, code, msg, detail)
	return jsonAnswer(map[string]any{"errcode": code, "errmsg": msg})
}

// fault answers the next injected HTTP failure of the (known) robot, if
// one is pending. Slack and webhooks, which answer with HTTP statuses,
// record the status as the code.
func (q *request) fault() (answer, bool) {
	if len(q.st.faults) == 0 {
		return answer{}, false
	}
	status := q.st.faults[0]
	q.st.faults = q.st.faults[1:]
	code := 0
	if q.ch == Slack || q.ch == Webhook {
		code = status
	}
	q.s.rejectLocked(Rejection{Channel: q.ch, Robot: q.st.robot.name(), At: q.now, HTTPStatus: status, Code: code, Detail: "injected HTTP failure"})
	return faultAnswer(status), true
}

// accept records m as accepted by the (known) robot at the request's
// time, with the request body; signed says the signature was checked.
func (q *request) accept(m Message, signed bool, body []byte) {
	m.Channel, m.Robot, m.At, m.Signed, m.Bytes, m.Body = q.ch, q.st.robot.name(), q.now, signed, len(body), body
	q.s.acceptLocked(m)
}

// skewed reports how far ts is from now and whether that is over limit.
func skewed(now, ts time.Time, limit time.Duration) (time.Duration, bool) {
	skew := now.Sub(ts)
	return skew, skew > limit || skew < -limit
}

// admit applies rolling-window limits, each {count, window length in ns}:
// it forgets admissions older than the longest window and, when every
// window holds fewer than its count, records now and reports true. s.mu is
// held.
func admit(st *robotState, now time.Time, windows ...[2]int64) bool {
	longest := int64(0)
	for _, w := range windows {
		longest = max(longest, w[1])
	}
	cut := 0
	for cut < len(st.admitted) && now.Sub(st.admitted[cut]) >= time.Duration(longest) {
		cut++
	}
	st.admitted = st.admitted[cut:]
	for _, w := range windows {
		n := 0
		for _, t := range st.admitted {
			if now.Sub(t) < time.Duration(w[1]) {
				n++
			}
		}
		if int64(n) >= w[0] {
			return false
		}
	}
	st.admitted = append(st.admitted, now)
	return true
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func ipAllowed(allowed []string, ip string) bool {
	if len(allowed) == 0 {
		return true
	}
	pip := net.ParseIP(ip)
	for _, a := range allowed {
		if _, n, err := net.ParseCIDR(a); err == nil && pip != nil && n.Contains(pip) {
			return true
		}
		if a == ip {
			return true
		}
	}
	return false
}

// sortedCodes lists codes for stable output.
func sortedCodes(m map[int]int) []int {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	return codes
}

// errBodyTooLarge marks a body over MaxBodyBytes.
var errBodyTooLarge = errors.New("request body over " + strconv.Itoa(MaxBodyBytes) + " bytes")
