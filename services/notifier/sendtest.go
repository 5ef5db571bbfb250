package notifier

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
)

// SendTest sends the test message to the receiver called name, with its
// real configuration (URL, secret, keyword), and returns the classified
// answer and the receiver's channel. It is what `fleetwatch-notifier test
// <receiver>` runs: the first thing to try when a robot stays silent. A nil
// client uses the configured request timeout; a nil now is time.Now.
func SendTest(ctx context.Context, cfg Config, name string, client *http.Client, now func() time.Time) (notify.Result, string, error) {
	var found *Receiver
	names := make([]string, 0, len(cfg.Receivers))
	for i := range cfg.Receivers {
		names = append(names, cfg.Receivers[i].Name)
		if cfg.Receivers[i].Name == name {
			found = &cfg.Receivers[i]
		}
	}
	if found == nil {
		return notify.Result{}, "", fmt.Errorf("receiver %q is not configured: use one of %q", name, names)
	}
	if client == nil {
		client = &http.Client{Timeout: cfg.RequestTimeout}
	}
	if now == nil {
		now = time.Now
	}
	n, err := NewNotifier(cfg.receiver(*found), client, now)
	if err != nil {
		return notify.Result{}, "", err
	}
	res, _ := n.Send(ctx, notify.TestContent(name, now()))
	return res, n.Channel(), nil
}
