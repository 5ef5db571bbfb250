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
// then the notes of scenarios that were not evaluated.
func Table(results []Result) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\tdevices\tevents\tingested\tsettled\texpected offline\tlate returns\talerts\tdevices alerted\tmsgs dingtalk (digests)\tmsgs feishu (digests)\trate-limited\tother rejections\tlost\tfalse\tPRESENCE stored\tClickHouse rows FINAL / stream\tverdict\t")
	var notes []string
	for _, r := range results {
		if !r.Evaluated {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tnot evaluated\t\n", r.Scenario, groupThousands(int64(r.Devices)))
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
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s/%s\t%s\t%s\t\n",
			r.Scenario, devices, groupThousands(int64(r.Events)), dur(r.Ingested), dur(r.Took),
			groupThousands(int64(r.ExpectedOffline)), groupThousands(int64(r.Late)), groupThousands(int64(r.Alerts)), groupThousands(int64(r.Firing)),
			msgs(devstack.ReceiverDingTalk), msgs(devstack.ReceiverFeishu), r.RateLimited, r.Rejected, r.Lost, r.False,
			groupThousands(int64(r.Stored)), groupThousands(int64(r.SetupEvents+r.Events)), rows, verdict)
	}
	_ = w.Flush()
	slices.Sort(notes)
	for _, n := range notes {
		b.WriteString("\n" + n + "\n")
	}
	return b.String()
}

func dur(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
