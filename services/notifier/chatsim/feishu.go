package chatsim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Feishu answers (code, msg) used by the simulator.
const (
	fsBadRequest   = 9499
	fsTooFrequent  = 11232
	fsTokenInvalid = 19001
	fsBadMsgType   = 19002
	fsSign         = 19021
	fsIPNotAllowed = 19022
	fsKeyword      = 19024
)

// FeishuSign computes the Feishu bot signature independently of the
// notifier: base64(HMAC-SHA256(key=timestamp+"\n"+secret, empty message)).
func FeishuSign(secret, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(timestamp+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// FeishuCardTemplates are the header colours a Feishu card accepts.
var FeishuCardTemplates = []string{"blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine", "violet", "purple", "indigo", "grey"}

func (s *Server) feishu(r *http.Request, body []byte, readErr error) answer {
	req := s.open(Feishu, r.PathValue("token"))
	defer req.close()
	now, st := req.now, req.st
	reject := func(code int, msg, detail string) answer {
		req.reject(http.StatusOK, code, msg, detail)
		return jsonAnswer(map[string]any{"code": code, "data": map[string]any{}, "msg": msg})
	}
	if st == nil {
		return reject(fsTokenInvalid, "param invalid: incoming webhook access token invalid", "no bot has this hook token")
	}
	if a, ok := req.fault(); ok {
		return a
	}
	if !s.unlimited && !admit(st, now, [2]int64{FeishuPerSecond, int64(time.Second)}, [2]int64{FeishuPerMinute, int64(time.Minute)}) {
		return reject(fsTooFrequent, "frequency limited psm[lark.oapi.app_platform_runtime]appID[-1]",
			fmt.Sprintf("over %d per second or %d per minute", FeishuPerSecond, FeishuPerMinute))
	}
	if ip := clientIP(r); !ipAllowed(st.robot.AllowedIPs, ip) {
		return reject(fsIPNotAllowed, "ip not allowed", "the bot's IP allowlist does not contain "+ip)
	}
	if !isJSON(r) {
		return reject(fsBadRequest, "Bad Request", fmt.Sprintf("Content-Type %q is not application/json", r.Header.Get("Content-Type")))
	}
	if readErr == errBodyTooLarge {
		return reject(fsBadRequest, "Bad Request", fmt.Sprintf("body over %d bytes", MaxBodyBytes))
	}
	if readErr != nil {
		return reject(fsBadRequest, "Bad Request", "reading body: "+readErr.Error())
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return reject(fsBadRequest, "Bad Request", "body is not a JSON object: "+err.Error())
	}
	signed := false
	if st.robot.Secret != "" {
		const signMsg = "sign match fail or timestamp is not within one hour from current time"
		ts, ok := feishuTimestamp(top["timestamp"])
		if !ok {
			return reject(fsSign, signMsg, "timestamp is missing from the body or not epoch seconds (string or number)")
		}
		sec, _ := strconv.ParseInt(ts, 10, 64)
		if skew, off := skewed(now, time.Unix(sec, 0), MaxClockSkew); off {
			return reject(fsSign, signMsg, fmt.Sprintf("timestamp %d is %s away from the server clock (limit 1h; milliseconds instead of seconds?)", sec, skew.Round(time.Second)))
		}
		var got string
		if raw, ok := top["sign"]; !ok || json.Unmarshal(raw, &got) != nil || got == "" {
			return reject(fsSign, signMsg, "sign is missing from the body or not a string")
		}
		if want := FeishuSign(st.robot.Secret, ts); !hmac.Equal([]byte(got), []byte(want)) {
			detail := "sign does not match base64(HMAC-SHA256(key=timestamp+\"\\n\"+secret, empty message))"
			if got == DingTalkSign(st.robot.Secret, ts) {
				detail = "sign was computed with the DingTalk algorithm (secret as key, timestamp+\"\\n\"+secret as message)"
			}
			return reject(fsSign, signMsg, detail)
		}
		signed = true
	}
	m, code, err := parseFeishu(top)
	if err != nil {
		msg := "Bad Request"
		if code == fsBadMsgType {
			msg = "params error, msg_type need"
		}
		return reject(code, msg, err.Error())
	}
	if len(st.robot.Keywords) > 0 && !containsAny(m.keywordText, st.robot.Keywords) {
		return reject(fsKeyword, "Key Words Not Found", fmt.Sprintf("none of %q appears in the message", st.robot.Keywords))
	}
	req.accept(m.msg, signed, body)
	return jsonAnswer(map[string]any{"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": map[string]any{}, "msg": "success"})
}

// feishuTimestamp accepts "1700000000" or 1700000000.
func feishuTimestamp(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var n json.Number
		if err := dec.Decode(&n); err != nil {
			return "", false
		}
		s = n.String()
	}
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		return "", false
	}
	return s, true
}

var (
	larkAtRe = regexp.MustCompile(`<at (?:id|user_id)="?([^">\s]+)"?\s*>`)
	// feishuPostLangs are the languages a post may carry.
	feishuPostLangs = []string{"en_us", "ja_jp", "zh_cn", "zh_hk", "zh_tw"}
)

// postElement is one element of a post paragraph; which fields are
// required depends on the tag.
type postElement struct {
	Tag       *string `json:"tag"`
	Text      *string `json:"text"`
	Href      *string `json:"href"`
	UserID    *string `json:"user_id"`
	UserName  *string `json:"user_name"`
	ImageKey  *string `json:"image_key"`
	FileKey   *string `json:"file_key"`
	EmojiType *string `json:"emoji_type"`
	UnEscape  *bool   `json:"un_escape"`
	Language  *string `json:"language"`
}

// parsePost checks one language of a post (title, then paragraphs of
// tagged elements with their required fields) and renders it for humans.
func parsePost(lang string, raw json.RawMessage) (title, text string, mentions []string, err error) {
	var post struct {
		Title   *string         `json:"title"`
		Content [][]postElement `json:"content"`
	}
	if err := json.Unmarshal(raw, &post); err != nil {
		return "", "", nil, fmt.Errorf("content.post.%s: %v (title is a string, content an array of arrays of elements)", lang, err)
	}
	if post.Title == nil {
		return "", "", nil, fmt.Errorf("content.post.%s.title is missing", lang)
	}
	if len(post.Content) == 0 {
		return "", "", nil, fmt.Errorf("content.post.%s.content is empty", lang)
	}
	var lines []string
	for i, para := range post.Content {
		var line strings.Builder
		for j, el := range para {
			at := fmt.Sprintf("content.post.%s.content[%d][%d]", lang, i, j)
			if el.Tag == nil || *el.Tag == "" {
				return "", "", nil, fmt.Errorf("%s has no tag", at)
			}
			need := func(name string, v *string) error {
				if v == nil || *v == "" {
					return fmt.Errorf("%s: a %s element needs %s", at, *el.Tag, name)
				}
				return nil
			}
			switch *el.Tag {
			case "text":
				if el.Text == nil {
					return "", "", nil, fmt.Errorf("%s: a text element needs text", at)
				}
				line.WriteString(*el.Text)
			case "a":
				if err := errors.Join(need("text", el.Text), need("href", el.Href)); err != nil {
					return "", "", nil, err
				}
				if u, err := url.Parse(*el.Href); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return "", "", nil, fmt.Errorf("%s: href %q is not an absolute http(s) URL", at, *el.Href)
				}
				line.WriteString("[" + *el.Text + "](" + *el.Href + ")")
			case "at":
				if err := need("user_id", el.UserID); err != nil {
					return "", "", nil, err
				}
				name := *el.UserID
				if el.UserName != nil && *el.UserName != "" {
					name = *el.UserName
				}
				line.WriteString("@" + name)
				mentions = append(mentions, *el.UserID)
			case "img":
				if err := need("image_key", el.ImageKey); err != nil {
					return "", "", nil, err
				}
			case "media":
				if err := need("file_key", el.FileKey); err != nil {
					return "", "", nil, err
				}
			case "emotion":
				if err := need("emoji_type", el.EmojiType); err != nil {
					return "", "", nil, err
				}
			case "hr":
				line.WriteString("---")
			case "code_block":
				if el.Text == nil {
					return "", "", nil, fmt.Errorf("%s: a code_block element needs text", at)
				}
				line.WriteString(*el.Text)
			default:
				return "", "", nil, fmt.Errorf("%s: tag %q is not text, a, at, img, media, emotion, hr or code_block", at, *el.Tag)
			}
		}
		lines = append(lines, line.String())
	}
	return *post.Title, strings.Join(lines, "\n"), mentions, nil
}

// parseFeishu checks a Feishu body against the schema of its msg_type and
// renders it for humans. The int is the code to answer on error.
func parseFeishu(top map[string]json.RawMessage) (parsed, int, error) {
	var mt string
	if raw, ok := top["msg_type"]; !ok || json.Unmarshal(raw, &mt) != nil || mt == "" {
		return parsed{}, fsBadMsgType, fmt.Errorf("msg_type is missing or not a string")
	}
	var p parsed
	p.msg.MsgType = mt
	var texts []string
	switch mt {
	case "text":
		var c struct {
			Text *string `json:"text"`
		}
		if err := field(top, "content", &c); err != nil || c.Text == nil || *c.Text == "" {
			return parsed{}, fsBadRequest, fmt.Errorf("content.text is missing or empty")
		}
		p.msg.Title, p.msg.Text = firstLine(*c.Text), *c.Text
		texts = []string{*c.Text}
	case "post":
		var c struct {
			Post map[string]json.RawMessage `json:"post"`
		}
		if err := field(top, "content", &c); err != nil || len(c.Post) == 0 {
			return parsed{}, fsBadRequest, fmt.Errorf("content.post needs a language (zh_cn, en_us, …) with title and content: %v", err)
		}
		langs := make([]string, 0, len(c.Post))
		for lang := range c.Post {
			langs = append(langs, lang)
		}
		sort.Strings(langs)
		for _, lang := range langs {
			if !contains(feishuPostLangs, lang) {
				return parsed{}, fsBadRequest, fmt.Errorf("content.post.%s: the language is not one of %v", lang, feishuPostLangs)
			}
			title, text, mentions, err := parsePost(lang, c.Post[lang])
			if err != nil {
				return parsed{}, fsBadRequest, err
			}
			if p.msg.Title == "" || lang == "zh_cn" {
				p.msg.Title, p.msg.Text, p.msg.Mentions = title, text, mentions
			}
		}
		var all any
		_ = json.Unmarshal(top["content"], &all)
		texts = collectTexts(all, nil)
	case "interactive":
		raw, ok := top["card"]
		if !ok {
			return parsed{}, fsBadRequest, fmt.Errorf("msg_type interactive needs the card as an object under \"card\"")
		}
		var card map[string]any
		if err := json.Unmarshal(raw, &card); err != nil || card == nil {
			return parsed{}, fsBadRequest, fmt.Errorf("card must be a JSON object, not a string or %s", bytes.TrimSpace(raw[:min(len(raw), 20)]))
		}
		if err := checkCard(card, &p.msg); err != nil {
			return parsed{}, fsBadRequest, err
		}
		texts = collectTexts(card, nil)
	default:
		return parsed{}, fsBadMsgType, fmt.Errorf("msg_type %q is not text, post or interactive", mt)
	}
	p.keywordText = strings.Join(texts, "\n")
	for _, m := range larkAtRe.FindAllStringSubmatch(p.keywordText, -1) {
		p.msg.Mentions = append(p.msg.Mentions, m[1])
	}
	return p, 0, nil
}

func checkCard(card map[string]any, m *Message) error {
	if h, ok := card["header"]; ok {
		header, ok := h.(map[string]any)
		if !ok {
			return fmt.Errorf("card.header is not an object")
		}
		if tpl, ok := header["template"]; ok {
			ts, _ := tpl.(string)
			if !contains(FeishuCardTemplates, ts) {
				return fmt.Errorf("card.header.template %q is not one of %v", tpl, FeishuCardTemplates)
			}
			m.Color = ts
		}
		title, _ := header["title"].(map[string]any)
		tag, _ := title["tag"].(string)
		content, _ := title["content"].(string)
		if tag != "plain_text" && tag != "lark_md" || content == "" {
			return fmt.Errorf("card.header.title needs tag plain_text and a content")
		}
		m.Title = content
	}
	els, ok := card["elements"].([]any)
	if !ok || len(els) == 0 {
		return fmt.Errorf("card.elements must be a non-empty array")
	}
	var lines []string
	for i, e := range els {
		el, ok := e.(map[string]any)
		tag, _ := el["tag"].(string)
		if !ok || tag == "" {
			return fmt.Errorf("card.elements[%d] has no tag", i)
		}
		switch tag {
		case "div":
			text, _ := el["text"].(map[string]any)
			_, fields := el["fields"]
			if text == nil && !fields {
				return fmt.Errorf("card.elements[%d]: a div needs text or fields", i)
			}
			if text != nil {
				tt, _ := text["tag"].(string)
				c, ok := text["content"].(string)
				if tt != "plain_text" && tt != "lark_md" || !ok {
					return fmt.Errorf("card.elements[%d].text needs tag plain_text or lark_md and a content", i)
				}
				lines = append(lines, c)
			}
		case "hr":
			lines = append(lines, "---")
		case "note":
			if _, ok := el["elements"].([]any); !ok {
				return fmt.Errorf("card.elements[%d]: a note needs elements", i)
			}
			lines = append(lines, strings.Join(collectTexts(el["elements"], nil), " "))
		case "action":
			acts, ok := el["actions"].([]any)
			if !ok || len(acts) == 0 {
				return fmt.Errorf("card.elements[%d]: an action needs actions", i)
			}
			for j, a := range acts {
				if err := checkButton(a); err != nil {
					return fmt.Errorf("card.elements[%d].actions[%d]: %v", i, j, err)
				}
			}
			lines = append(lines, "["+strings.Join(collectTexts(el["actions"], nil), "] [")+"]")
		case "markdown":
			c, _ := el["content"].(string)
			lines = append(lines, c)
		}
	}
	m.Text = strings.Join(lines, "\n")
	return nil
}

// checkButton checks a card button: a plain_text or lark_md text, and an
// absolute http(s) url when it has one.
func checkButton(v any) error {
	b, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("not an object")
	}
	if tag, _ := b["tag"].(string); tag != "button" {
		return fmt.Errorf("tag %q is not button", b["tag"])
	}
	text, _ := b["text"].(map[string]any)
	tt, _ := text["tag"].(string)
	if c, ok := text["content"].(string); !ok || c == "" || (tt != "plain_text" && tt != "lark_md") {
		return fmt.Errorf("a button needs text with tag plain_text or lark_md and a content")
	}
	if raw, ok := b["url"]; ok {
		s, _ := raw.(string)
		if u, err := url.Parse(s); s == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("url %v is not an absolute http(s) URL", raw)
		}
	}
	if typ, ok := b["type"]; ok && typ != "default" && typ != "primary" && typ != "danger" {
		return fmt.Errorf("type %v is not default, primary or danger", typ)
	}
	return nil
}

// collectTexts gathers the strings under "content", "text" and "title" keys.
func collectTexts(v any, out []string) []string {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && (k == "content" || k == "text" || k == "title") {
				out = append(out, s)
				continue
			}
			out = collectTexts(x, out)
		}
	case []any:
		for _, x := range t {
			out = collectTexts(x, out)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
