package chatsim

import (
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"time"
)

// Inbox is what GET /api/messages answers: newest first.
type Inbox struct {
	Messages   []Message   `json:"messages"`
	Rejections []Rejection `json:"rejections"`
	// Counts are rejection counts by channel and code.
	Counts   map[Channel]map[int]int `json:"counts"`
	Requests int                     `json:"requests"`
}

func (s *Server) inbox() Inbox {
	msgs := s.Messages()
	rjs := s.Rejections()
	slices.Reverse(msgs)
	slices.Reverse(rjs)
	// Empty lists, not null, for JSON clients.
	if msgs == nil {
		msgs = []Message{}
	}
	if rjs == nil {
		rjs = []Rejection{}
	}
	return Inbox{Messages: msgs, Rejections: rjs, Counts: s.RejectionCounts(), Requests: s.Requests()}
}

func (s *Server) serveAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.inbox())
}

func (s *Server) serveInbox(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = inboxPage.Execute(w, s.inbox())
}

var inboxPage = template.Must(template.New("inbox").Funcs(template.FuncMap{
	"clock": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"codes": sortedCodes,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>fleetwatch inbox ({{len .Messages}})</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f7f9;color:#222}
h1{font-size:1.3em} .msg,.rej{background:#fff;border-radius:6px;padding:.7em 1em;margin:.6em 0;border-left:6px solid #999}
.dingtalk{border-left-color:#1677ff} .feishu{border-left-color:#00b96b} .wecom{border-left-color:#07c160} .slack{border-left-color:#4a154b} .webhook{border-left-color:#555}
.red,.carmine{border-left-color:#d93026} .orange,.yellow{border-left-color:#ff8800} .green,.turquoise{border-left-color:#2ea121} .blue,.wathet{border-left-color:#1677ff}
.meta{color:#666;font-size:.85em} .title{font-weight:600;margin:.3em 0} pre{white-space:pre-wrap;margin:.3em 0;font-family:inherit}
.rej{border-left-color:#d93026;background:#fff5f5} .silent{color:#d93026}
</style></head><body>
<h1>fleetwatch inbox — what would have been sent to DingTalk, Feishu, WeCom, Slack and webhooks</h1>
<p class="meta">{{.Requests}} requests · {{len .Messages}} messages · {{len .Rejections}} rejected{{range $ch, $m := .Counts}}{{range codes $m}} · {{$ch}} {{.}}×{{index $m .}}{{end}}{{end}} · refreshes every 3 s · <a href="/api/messages">JSON</a></p>
{{if .Rejections}}<h2>Rejected (newest first)</h2>{{range .Rejections}}
<div class="rej"><div class="meta">#{{.Seq}} {{clock .At}} · {{.Channel}} · {{.Robot}} · HTTP {{.HTTPStatus}}{{if .Code}} · code {{.Code}}{{end}}</div>
<div class="title">{{.Msg}}</div>{{if .Detail}}<div class="meta">{{.Detail}}</div>{{end}}</div>{{end}}{{end}}
<h2>Messages (newest first)</h2>
{{range .Messages}}<div class="msg {{.Channel}} {{.Color}}">
<div class="meta">#{{.Seq}} {{clock .At}} · {{.Channel}} · {{.Robot}} · {{.MsgType}} · {{.Bytes}} bytes{{if .Signed}} · signed{{end}}{{if .MsgUUID}} · msgUuid {{.MsgUUID}}{{end}}{{if .Mentions}} · mentions {{.Mentions}}{{end}}{{if .SilentMentions}} <span class="silent">· silent mentions {{.SilentMentions}} (no @ in text)</span>{{end}}</div>
<div class="title">{{.Title}}</div><pre>{{.Text}}</pre></div>
{{else}}<p>No messages yet.</p>{{end}}
</body></html>
`))
