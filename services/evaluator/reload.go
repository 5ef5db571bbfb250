package evaluator

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// ErrReload is wrapped by every reason a new config was rejected; the old
// one stays in force.
var ErrReload = errors.New("config not reloaded, the old one stays in force")

// Reload applies a new config to the running service without losing state
// (SIGHUP). It re-reads the inventory file and the API token, rebuilds the
// labeler and the routing tree, and reconfigures the tracker (see
// tracker.Tracker.Reconfigure) on the processing goroutine. Reloadable:
// grace, receivers, severity, labels (and the inventory file's content),
// route (with its flap settings), correlation, node_severity,
// silences.windows and the API token. A change of any other setting
// needs a restart: such a config is rejected as a whole, like an invalid
// one, and the old config stays in force.
func (s *Service) Reload(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	routes, err := cfg.routes()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	windows, err := silencestore.CompileWindows(cfg.Silences.Windows, "evaluator.silences.windows")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	token, err := cfg.API.LoadToken("evaluator.api")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	var rerr error
	err = s.do(ctx, func(context.Context) {
		if rerr = fixedSettings(s.cfg, cfg); rerr != nil {
			return
		}
		// The inventory file and the labeler, interned in the live table:
		// nothing changes until the trackers accept the config.
		file, err := labels.LoadInventory(cfg.Labels.Inventory, s.table)
		if err != nil {
			rerr = fmt.Errorf("evaluator.labels.inventory: %w", err)
			return
		}
		tc, err := s.trackerConfig(cfg, routes, "")
		if err != nil {
			rerr = err
			return
		}
		if _, err := tracker.New(tc); err != nil {
			rerr = err
			return
		}
		changed, stale := s.dynamic.ReplaceFile(file)
		relabelAll := !reflect.DeepEqual(s.cfg.Labels, cfg.Labels)
		flushed := 0
		for _, u := range s.units {
			utc, err := s.trackerConfig(cfg, routes, u.scope)
			if err != nil {
				rerr = err // not reached: the same config was accepted above
				return
			}
			ds, err := u.tr.Reconfigure(utc, s.now(), relabelAll)
			if err != nil {
				rerr = err // not reached: tracker.New accepted tc
				return
			}
			if !relabelAll {
				for _, id := range changed {
					s.relabel(u, id, stale[id])
				}
			}
			flushed += len(ds)
			s.publishDecisions(u, ds)
		}
		s.cfg, s.routes = cfg, routes
		s.ctl.windows.Store(&windows)
		if s.ctl.api != nil {
			s.ctl.api.SetToken(token)
		}
		for _, u := range s.units {
			s.applySilences(u)
		}
		s.log.Info("config reloaded", "grace", cfg.Grace, "receivers", cfg.Receivers, "relabelled_all", relabelAll,
			"inventory_changes", len(changed), "notifications_flushed", flushed, "windows", len(windows), "units", len(s.units))
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	if rerr != nil {
		return fmt.Errorf("%w: %w", ErrReload, rerr)
	}
	s.metrics.reloads.Add(ctx, 1)
	return nil
}

// fixedSettings rejects a change of a setting that needs a restart.
func fixedSettings(old, cfg Config) error {
	for _, f := range []struct {
		name     string
		old, new any
	}{
		{"tick", old.Tick, cfg.Tick},
		{"partitions", old.Partitions, cfg.Partitions},
		{"fetch_batch", old.FetchBatch, cfg.FetchBatch},
		{"ack_wait", old.AckWait, cfg.AckWait},
		{"api.listen", old.API.Listen, cfg.API.Listen},
		{"api.max_body_bytes", old.API.MaxBodyBytes, cfg.API.MaxBodyBytes},
		{"api.max_limit", old.API.MaxLimit, cfg.API.MaxLimit},
		{"api.timeout", old.API.Timeout, cfg.API.Timeout},
		{"silences.bucket", old.Silences.Bucket, cfg.Silences.Bucket},
		{"silences.retention", old.Silences.Retention, cfg.Silences.Retention},
		{"silences.gc_interval", old.Silences.GCInterval, cfg.Silences.GCInterval},
		{"inventory_kv.bucket", old.InventoryKV.Bucket, cfg.InventoryKV.Bucket},
		{"snapshot_interval", old.SnapshotInterval, cfg.SnapshotInterval},
		{"snapshot_bucket", old.SnapshotBucket, cfg.SnapshotBucket},
		{"lease", old.Lease, cfg.Lease},
	} {
		if f.old != f.new {
			return fmt.Errorf("evaluator.%s changed from %v to %v: it cannot change while running; restart the evaluator to apply it", f.name, f.old, f.new)
		}
	}
	return nil
}
