package storm

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
)

// Table renders results as an aligned text table with a verdict column,
// then per scenario the alerts by kind, its own checks and the issue's
// targets, and the notes of scenarios that were not evaluated.
func Table(results []Result) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\tdevices\tevents\tingested\tprocessed\tsettled\texpected offline\tlate returns\talerts\tdevices alerted\tflapping\tmsgs dingtalk (digests)\tmsgs feishu (digests)\trate-limited\tother rejections\tlost\tfalse\tPRESENCE stored\tClickHouse rows FINAL / stream\tverdict\t")
	var notes, details []string
	for _, r := range results {
		if !r.Evaluated {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tnot evaluated\t\n", r.Scenario, groupThousands(int64(r.Devices)))
			notes = append(notes, r.Scenario+": "+r.Note)
			continue
		}
		rows := "not checked (no ClickHouse)"
		if r.RowsChecked {
			var parts []string
			for _, t := range tables {
				parts = append(parts, fmt.Sprintf("%s %s/%s", t.table, groupThousands(int64(r.Rows[t.table])), groupThousands(int64(r.Want[t.table]))))
			}
			rows = strings.Join(parts, ", ")
		}
		verdict := "OK"
		if !r.OK() {
			verdict = "FAIL"
		}
		msgs := func(rc string) string {
			return fmt.Sprintf("%d (%d)", r.Messages[rc], r.Digests[rc])
		}
		devices := groupThousands(int64(r.Devices))
		if r.Paho > 0 {
			devices += " + " + groupThousands(int64(r.Paho)) + " paho"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s/%s\t%s\t%s\t\n",
			r.Scenario, devices, groupThousands(int64(r.Events)), dur(r.Ingested), dur(r.Processed), dur(r.Took),
			groupThousands(int64(r.ExpectedOffline)), groupThousands(int64(r.Late)), groupThousands(int64(r.Alerts)), groupThousands(int64(r.Firing)),
			groupThousands(int64(r.Flapping)), msgs(devstack.ReceiverDingTalk), msgs(devstack.ReceiverFeishu), r.RateLimited, r.Rejected, r.Lost, r.False,
			groupThousands(int64(r.Stored)), groupThousands(int64(r.SetupEvents+r.Events)), rows, verdict)
		details = append(details, r.details())
	}
	_ = w.Flush()
	for _, d := range details {
		b.WriteString("\n" + d)
	}
	slices.Sort(notes)
	for _, n := range notes {
		b.WriteString("\n" + n + "\n")
	}
	return b.String()
}

// details is a scenario's lines below the table.
func (r Result) details() string {
	var b strings.Builder
	kinds := make([]string, 0, len(r.Kinds))
	for k := range r.Kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %s", k, groupThousands(int64(r.Kinds[k]))))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	fmt.Fprintf(&b, "%s: firing notifications by kind: %s\n", r.Scenario, strings.Join(parts, ", "))
	fmt.Fprintf(&b, "%s: messages in the first 5 minutes: dingtalk %d, feishu %d", r.Scenario, r.FirstWindow[devstack.ReceiverDingTalk], r.FirstWindow[devstack.ReceiverFeishu])
	if r.Folded > 0 {
		fmt.Fprintf(&b, "; %s expected devices accounted for by a group_outage total", groupThousands(int64(r.Folded)))
	}
	b.WriteString("\n")
	for _, c := range r.Checks {
		verdict := "ok"
		if !c.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%s: check %s: %s\n", r.Scenario, verdict, c.What)
	}
	for _, m := range r.Remarks {
		fmt.Fprintf(&b, "%s: %s\n", r.Scenario, m)
	}
	for _, t := range r.Targets {
		verdict := "met"
		if !t.OK {
			verdict = "NOT met"
		}
		fmt.Fprintf(&b, "%s: target %s: %s\n", r.Scenario, verdict, t.What)
	}
	return b.String()
}

func dur(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
