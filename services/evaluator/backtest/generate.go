package backtest

import (
	"bufio"
	"container/heap"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// GenOptions shape a generated presence history.
type GenOptions struct {
	// Devices and Events (total lines) to generate.
	Devices, Events int
	// Seed makes the history reproducible.
	Seed uint64
	// StartMS is the broker time of the first event.
	StartMS int64
	// Nodes is the number of broker nodes (default 4).
	Nodes int
	// UpMS is the mean connection duration (exponential; default 2 h).
	UpMS float64
	// BlipPercent of the outages (default 90) are blips, exponential with
	// mean BlipMS (default 3 s); the others are exponential with mean
	// DownMS (default 15 min).
	BlipPercent    int
	BlipMS, DownMS float64
	// FlapperPercent of the devices (default 1) have connections and
	// outages 50 times shorter (minimum 1 ms).
	FlapperPercent int
	// DuplicatePercent of the events are written twice (default 1), as a
	// second ingest replica would.
	DuplicatePercent int
}

type genDevice struct {
	id      string
	next    int64
	online  bool
	connAt  int64
	node    string
	flapper bool
}

type genHeap []*genDevice

func (h genHeap) Len() int { return len(h) }
func (h genHeap) Less(i, j int) bool {
	if h[i].next != h[j].next {
		return h[i].next < h[j].next
	}
	return h[i].id < h[j].id
}
func (h genHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *genHeap) Push(x any)   { *h = append(*h, x.(*genDevice)) }
func (h *genHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

var genReasons = []events.Reason{events.ReasonKeepaliveTimeout, events.ReasonKeepaliveTimeout, events.ReasonClosed,
	events.ReasonSocketError, events.ReasonNormal}

// Generate writes a presence history as JSON lines, in broker-time order:
// every device connects, then alternates outages and connections.
func Generate(w io.Writer, o GenOptions) error {
	if o.Devices < 1 || o.Events < 1 {
		return fmt.Errorf("generate: devices and events must be positive")
	}
	if o.Nodes == 0 {
		o.Nodes = 4
	}
	if o.UpMS == 0 {
		o.UpMS = 2 * 3600_000
	}
	if o.BlipPercent == 0 {
		o.BlipPercent = 90
	}
	if o.BlipMS == 0 {
		o.BlipMS = 3_000
	}
	if o.DownMS == 0 {
		o.DownMS = 15 * 60_000
	}
	if o.FlapperPercent == 0 {
		o.FlapperPercent = 1
	}
	if o.DuplicatePercent == 0 {
		o.DuplicatePercent = 1
	}
	if o.StartMS == 0 {
		o.StartMS = 1_700_000_000_000
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6e7d))
	h := make(genHeap, 0, o.Devices)
	for i := range o.Devices {
		h = append(h, &genDevice{
			id:      fmt.Sprintf("plant%d-gw%d-%07d", i%7, i%13, i),
			next:    o.StartMS + int64(i%1000),
			flapper: rng.IntN(100) < o.FlapperPercent,
		})
	}
	heap.Init(&h)
	bw := bufio.NewWriterSize(w, 1<<20)
	exp := func(mean float64, flapper bool) int64 {
		if flapper {
			mean /= 50
		}
		return 1 + int64(rng.ExpFloat64()*mean)
	}
	for n := 0; n < o.Events; {
		d := h[0]
		e := events.PresenceEvent{DeviceID: d.id, Source: "backtest_gen", Protocol: "mqtt", ProtoVer: 5}
		if d.online {
			r := genReasons[rng.IntN(len(genReasons))]
			e.Kind, e.Reason, e.RawReason = events.KindDisconnected, r, string(r)
			e.Node, e.BrokerTSMS, e.ConnectedAtMS = d.node, d.next, d.connAt
			d.online = false
			if rng.IntN(100) < o.BlipPercent {
				d.next += exp(o.BlipMS, d.flapper)
			} else {
				d.next += exp(o.DownMS, d.flapper)
			}
		} else {
			d.node = fmt.Sprintf("emqx@10.0.0.%d", 1+rng.IntN(o.Nodes))
			e.Kind, e.Node, e.BrokerTSMS, e.ConnectedAtMS = events.KindConnected, d.node, d.next, d.next
			e.IP = fmt.Sprintf("10.%d.%d.%d", len(d.id)%7, rng.IntN(256), 1+rng.IntN(254))
			e.KeepaliveS = 60
			d.online, d.connAt = true, d.next
			d.next += exp(o.UpMS, d.flapper)
		}
		e.ReceivedAtMS = e.BrokerTSMS + 3
		heap.Fix(&h, 0)
		ev, err := events.NewPresenceEvent(e)
		if err != nil {
			return err
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		b = append(b, '\n')
		copies := 1
		if rng.IntN(100) < o.DuplicatePercent {
			copies = 2
		}
		for range min(copies, o.Events-n) {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			n++
		}
	}
	return bw.Flush()
}
