package template

// The default templates. Lines inside a block end with two spaces (a hard
// line break in DingTalk markdown; invisible in lark_md). Each language
// defines "title" (one line; the envelope adds the keyword) and "body" for
// one alert of any kind (device_offline, device_flapping, group_outage,
// node_silent; others get a generic wording), "digest_title" and
// "digest_body" for a digest (see RenderDigest), and "test_title" and
// "test_body" for the test message. Links are not part of the text: each
// channel renders Message.Links its own way (buttons, markdown links).
var defaults = map[Language]string{
	Chinese: `
{{- define "title" -}}
{{- if .Escalated}}升级 · {{end -}}
{{- if eq .RawKind "device_offline" -}}
  {{- if .Firing -}}
    {{- if eq .Total 1}}设备离线：{{.FirstID}}{{else if .Update}}设备离线：{{.Changes}}{{else}}{{.Total}} 台设备离线{{end -}}
  {{- else -}}
    {{- if eq .Total 1}}已恢复：{{.FirstID}} 重新上线，离线 {{.FirstOutage}}{{else}}已恢复：{{.Total}} 台设备重新上线，持续 {{.Duration}}{{end -}}
  {{- end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- else if eq .RawKind "device_flapping" -}}
  {{- if .Firing -}}
    {{- if eq .Total 1}}设备频繁上下线：{{.FirstID}}{{if .Flaps}}（{{.Flaps}} 次断开）{{end}}{{else}}{{.Total}} 台设备频繁上下线{{end -}}
  {{- else -}}
    {{- if eq .Total 1}}已稳定：{{.FirstID}} 不再频繁上下线{{else}}已稳定：{{.Total}} 台设备不再频繁上下线{{end -}}
  {{- end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- else if eq .RawKind "group_outage" -}}
  {{- if .Firing -}}
    批量离线：{{with .Group}}{{.}} {{end}}{{.Total}} 台设备离线{{if .Known}}（共 {{.Known}} 台，占 {{.Share}}）{{end}}
  {{- else -}}
    已恢复：{{with .Group}}{{.}} {{end}}批量离线结束，持续 {{.Duration}}
  {{- end -}}
{{- else if eq .RawKind "node_silent" -}}
  {{- if .Firing -}}
    Broker 节点无响应：{{.Node}}，{{.Total}} 台设备状态未知
  {{- else -}}
    已恢复：Broker 节点 {{.Node}} 恢复响应，中断 {{.Duration}}
  {{- end -}}
{{- else -}}
  {{- if .Firing}}{{.Kind}}：{{.Total}} 台设备{{else}}已恢复：{{.Kind}}（{{.Total}} 台设备）{{end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- end -}}
{{- end -}}

{{- define "body" -}}
**状态**：{{.Status}} · **级别**：{{.Severity}} · **类型**：{{.Kind}}  
{{if .EscalatedFrom}}**升级**：接收者 {{.EscalatedFrom}} 的告警 {{.EscalatedAfter}} 未恢复，升级通知本群  
{{else if .Tier}}**升级**：第 {{.Tier}} 级  
{{end -}}
{{with .Group}}**分组**：{{.}}  
{{end -}}
{{if eq .RawKind "node_silent"}}**节点**：{{.Node}}  
{{end -}}
{{if .Update}}**变化**：{{.Changes}}  
{{end -}}
{{if .Flaps}}**断开次数**：{{.Flaps}} 次  
{{end -}}
{{if .Known}}**占比**：{{.Total}} / {{.Known}} 台（{{.Share}}）  
{{end -}}
**开始**：{{.StartsAt}}  
{{if not .Firing}}**结束**：{{.EndsAt}}（持续 {{.Duration}}）  
{{end -}}
{{if eq .RawKind "node_silent"}}**状态未知的设备**{{else}}**设备**{{end}}：共 {{.Total}} 台

{{range .Devices -}}
- {{.ID}}{{with .Node}} · 节点 {{.}}{{end}}{{with .Reason}} · {{.}}{{end -}}
{{if eq $.RawKind "device_flapping"}}{{if .Outage}} · 抖动 {{.Outage}}（{{.Since}} – {{.Until}}）{{else}}{{with .Since}} · 抖动自 {{.}}{{end}}{{end}}
{{- else if eq $.RawKind "node_silent"}}{{if .Recovered}} · 已恢复{{else}}{{with .Since}} · 状态未知自 {{.}}{{end}}{{end}}
{{- else if .Outage}} · {{if $.Firing}}已恢复 · {{end}}离线 {{.Outage}}（{{.Since}} – {{.Until}}）
{{- else if .Recovered}} · 已恢复
{{- else}}{{with .Since}} · 离线自 {{.}}{{end}}{{end}}
{{end -}}
{{if .Omitted}}- 另有 {{.Omitted}} 台
{{end}}
fleetwatch · 告警 ID {{.ShortID}}
{{- end -}}

{{- define "digest_title" -}}
告警汇总：{{if .Firing}}{{.Firing}} 台设备告警{{end}}{{if and .Firing .Resolved}}，{{end}}{{if .Resolved}}{{.Resolved}} 台设备恢复{{end}}
{{- end -}}

{{- define "digest_body" -}}
**汇总**：{{.Alerts}} 条通知 · 告警 {{.FiringAlerts}} 条（{{.Firing}} 台） · 恢复 {{.ResolvedAlerts}} 条（{{.Resolved}} 台）  
**类型**：{{range $i, $k := .Kinds}}{{if $i}} · {{end}}{{$k.Name}} {{$k.Alerts}} 条{{end}}  
**最高级别**：{{.Severity}} · **时间**：{{.From}} – {{.To}}  
通知量超过发送频率限制，已合并为一条汇总。

**主要分组**：

{{range .Groups -}}
- {{.Name}}：告警 {{.Firing}} 台 · 恢复 {{.Resolved}} 台
{{end -}}
{{if .MoreGroups}}- 另有 {{.MoreGroups}} 个分组
{{end}}
**设备示例**：

{{range .Devices -}}
- {{.ID}} · {{.Status}}{{with .Group}} · {{.}}{{end}}{{with .Reason}} · {{.}}{{end}}{{if .Firing}}{{with .Since}} · 离线自 {{.}}{{end}}{{end}}
{{end -}}
{{if .Omitted}}- 另有 {{.Omitted}} 台
{{end}}
fleetwatch · 汇总 ID {{.ShortID}}
{{- end -}}

{{- define "test_title" -}}
测试消息 · {{.Receiver}}
{{- end -}}

{{- define "test_body" -}}
这是 fleetwatch 发往接收者 **{{.Receiver}}** 的测试消息（{{.At}}）。  
看到这条消息，说明地址、签名和关键词都配置正确。
{{- end -}}
`,
	English: `
{{- define "title" -}}
{{- if .Escalated}}Escalated · {{end -}}
{{- if eq .RawKind "device_offline" -}}
  {{- if .Firing -}}
    {{- if eq .Total 1}}Device offline: {{.FirstID}}{{else if .Update}}Devices offline: {{.Changes}}{{else}}{{.Total}} devices offline{{end -}}
  {{- else -}}
    {{- if eq .Total 1}}Resolved: {{.FirstID}} back online after {{.FirstOutage}}{{else}}Resolved: {{.Total}} devices back online after {{.Duration}}{{end -}}
  {{- end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- else if eq .RawKind "device_flapping" -}}
  {{- if .Firing -}}
    {{- if eq .Total 1}}Device flapping: {{.FirstID}}{{if .Flaps}} ({{.Flaps}} disconnect{{if ne .Flaps 1}}s{{end}}){{end}}{{else}}{{.Total}} devices flapping{{end -}}
  {{- else -}}
    {{- if eq .Total 1}}Resolved: {{.FirstID}} is stable again{{else}}Resolved: {{.Total}} devices stable again{{end -}}
  {{- end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- else if eq .RawKind "group_outage" -}}
  {{- if .Firing -}}
    Group outage{{with .Group}} at {{.}}{{end}}: {{.Total}}{{if .Known}} of {{.Known}}{{end}} device{{if ne .Total 1}}s{{end}} offline{{if .Known}} ({{.Share}}){{end}}
  {{- else -}}
    Resolved: group outage{{with .Group}} at {{.}}{{end}} is over after {{.Duration}}
  {{- end -}}
{{- else if eq .RawKind "node_silent" -}}
  {{- if .Firing -}}
    Broker node silent: {{.Node}}, {{.Total}} device{{if ne .Total 1}}s{{end}} of unknown state
  {{- else -}}
    Resolved: broker node {{.Node}} is back after {{.Duration}}
  {{- end -}}
{{- else -}}
  {{- if .Firing}}{{.Kind}}: {{.Total}} device{{if ne .Total 1}}s{{end}}{{else}}Resolved: {{.Kind}} ({{.Total}} device{{if ne .Total 1}}s{{end}}){{end -}}
  {{- with .Group}} · {{.}}{{end -}}
{{- end -}}
{{- end -}}

{{- define "body" -}}
**Status**: {{.Status}} · **Severity**: {{.Severity}} · **Kind**: {{.Kind}}  
{{if .EscalatedFrom}}**Escalated**: unresolved for {{.EscalatedAfter}} at receiver {{.EscalatedFrom}}  
{{else if .Tier}}**Escalation**: tier {{.Tier}}  
{{end -}}
{{with .Group}}**Group**: {{.}}  
{{end -}}
{{if eq .RawKind "node_silent"}}**Node**: {{.Node}}  
{{end -}}
{{if .Update}}**Changes**: {{.Changes}}  
{{end -}}
{{if .Flaps}}**Disconnects**: {{.Flaps}}  
{{end -}}
{{if .Known}}**Share**: {{.Total}} of {{.Known}} devices ({{.Share}})  
{{end -}}
**Started**: {{.StartsAt}}  
{{if not .Firing}}**Ended**: {{.EndsAt}} (lasted {{.Duration}})  
{{end -}}
{{if eq .RawKind "node_silent"}}**Devices of unknown state**{{else}}**Devices**{{end}}: {{.Total}}

{{range .Devices -}}
- {{.ID}}{{with .Node}} · node {{.}}{{end}}{{with .Reason}} · {{.}}{{end -}}
{{if eq $.RawKind "device_flapping"}}{{if .Outage}} · flapped for {{.Outage}} ({{.Since}} – {{.Until}}){{else}}{{with .Since}} · flapping since {{.}}{{end}}{{end}}
{{- else if eq $.RawKind "node_silent"}}{{if .Recovered}} · recovered{{else}}{{with .Since}} · unknown since {{.}}{{end}}{{end}}
{{- else if .Outage}} · {{if $.Firing}}recovered · {{end}}offline for {{.Outage}} ({{.Since}} – {{.Until}})
{{- else if .Recovered}} · recovered
{{- else}}{{with .Since}} · offline since {{.}}{{end}}{{end}}
{{end -}}
{{if .Omitted}}- +{{.Omitted}} more
{{end}}
fleetwatch · alert id {{.ShortID}}
{{- end -}}

{{- define "digest_title" -}}
Digest: {{if .Firing}}{{.Firing}} device{{if ne .Firing 1}}s{{end}} firing{{end}}{{if and .Firing .Resolved}}, {{end}}{{if .Resolved}}{{.Resolved}} device{{if ne .Resolved 1}}s{{end}} resolved{{end}}
{{- end -}}

{{- define "digest_body" -}}
**Summary**: {{.Alerts}} notification{{if ne .Alerts 1}}s{{end}} · {{.FiringAlerts}} firing ({{.Firing}} device{{if ne .Firing 1}}s{{end}}) · {{.ResolvedAlerts}} resolved ({{.Resolved}} device{{if ne .Resolved 1}}s{{end}})  
**Kinds**: {{range $i, $k := .Kinds}}{{if $i}} · {{end}}{{$k.Name}} × {{$k.Alerts}}{{end}}  
**Highest severity**: {{.Severity}} · **Time**: {{.From}} – {{.To}}  
More notifications than the rate limit allows: merged into one digest.

**Top groups**:

{{range .Groups -}}
- {{.Name}}: {{.Firing}} firing · {{.Resolved}} resolved
{{end -}}
{{if .MoreGroups}}- +{{.MoreGroups}} more groups
{{end}}
**Sample devices**:

{{range .Devices -}}
- {{.ID}} · {{.Status}}{{with .Group}} · {{.}}{{end}}{{with .Reason}} · {{.}}{{end}}{{if .Firing}}{{with .Since}} · offline since {{.}}{{end}}{{end}}
{{end -}}
{{if .Omitted}}- +{{.Omitted}} more
{{end}}
fleetwatch · digest id {{.ShortID}}
{{- end -}}

{{- define "test_title" -}}
Test message · {{.Receiver}}
{{- end -}}

{{- define "test_body" -}}
This is a test message from fleetwatch to receiver **{{.Receiver}}** ({{.At}}).  
If you can read it, the URL, signature and keyword are configured correctly.
{{- end -}}
`,
}

type vocabulary struct {
	kinds, severities, statuses, reasons map[string]string
	// Link titles: an alert's view, a device's, the alert list (digests)
	// and the start page (the test message).
	viewAlert, viewDevice, viewAlerts, viewHome string
}

var words = map[Language]vocabulary{
	Chinese: {
		viewAlert: "查看告警", viewDevice: "查看设备", viewAlerts: "查看告警列表", viewHome: "打开 fleetwatch",
		kinds: map[string]string{
			"device_offline": "设备离线", "device_flapping": "设备频繁上下线",
			"group_outage": "批量离线", "node_silent": "Broker 节点无响应",
		},
		severities: map[string]string{"critical": "严重", "warning": "警告", "info": "提示"},
		statuses:   map[string]string{"firing": "告警中", "resolved": "已恢复"},
		reasons: map[string]string{
			"normal": "正常断开", "kicked": "被踢下线", "discarded": "会话被丢弃", "takenover": "会话被接管",
			"keepalive_timeout": "心跳超时", "closed": "连接关闭", "socket_error": "网络错误",
			"not_authorized": "未授权", "protocol_error": "协议错误", "server_shutdown": "服务端关闭", "other": "其他原因",
		},
	},
	English: {
		viewAlert: "View alert", viewDevice: "View device", viewAlerts: "View alerts", viewHome: "Open fleetwatch",
		kinds: map[string]string{
			"device_offline": "Device offline", "device_flapping": "Device flapping",
			"group_outage": "Group outage", "node_silent": "Broker node silent",
		},
		severities: map[string]string{"critical": "critical", "warning": "warning", "info": "info"},
		statuses:   map[string]string{"firing": "firing", "resolved": "resolved"},
		reasons: map[string]string{
			"normal": "normal disconnect", "kicked": "kicked", "discarded": "session discarded", "takenover": "session taken over",
			"keepalive_timeout": "keepalive timeout", "closed": "connection closed", "socket_error": "socket error",
			"not_authorized": "not authorized", "protocol_error": "protocol error", "server_shutdown": "server shutdown", "other": "other",
		},
	},
}
