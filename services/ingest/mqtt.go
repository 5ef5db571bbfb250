package ingest

import (
	"fmt"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// subscribeTimeout bounds the wait for a SUBACK.
const subscribeTimeout = 10 * time.Second

// clientOptions configures paho: QoS 1 into a persistent session, manual
// acknowledgement, messages handed over in receive order on one goroutine
// (so that PUBACKs can follow that order; the handler never waits for
// JetStream, only for a free slot of max_in_flight), reconnect forever.
func (s *Service) clientOptions() *paho.ClientOptions {
	m := s.cfg.MQTT
	opts := paho.NewClientOptions().
		AddBroker(m.Broker).
		SetClientID(m.ClientID).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetKeepAlive(m.KeepAlive).
		SetConnectTimeout(m.ConnectTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(m.MaxReconnectInterval).
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(s.onConnectionLost).
		SetConnectionNotificationHandler(s.onNotification).
		SetCustomOpenConnectionFn(s.openConn).
		SetStore(noStore{})
	if m.Username != "" {
		opts.SetUsername(m.Username)
		opts.SetPassword(s.password)
	}
	if s.tlsConfig != nil {
		opts.SetTLSConfig(s.tlsConfig)
	}
	return opts
}

// onConnect (re)subscribes after every connect: the broker may have lost the
// session (expiry, a node without session persistence). A refused or failed
// subscription is retried with backoff while this connection lasts; messages
// of a persistent session keep flowing meanwhile. (mochi, under emqxsim,
// refuses a SUBSCRIBE whose packet id equals one of its own unacknowledged
// deliveries — it clears once those are processed.)
func (s *Service) onConnect(c paho.Client) {
	s.hold() // nothing was heard while disconnected
	gen := s.connGen.Add(1)
	filters := s.cfg.filters()
	backoff := retryMin
	for attempt := 1; ; attempt++ {
		err := subscribe(c, filters)
		if err == nil {
			break
		}
		if !c.IsConnectionOpen() || s.connGen.Load() != gen || s.workCtx.Err() != nil {
			return // a new connection resubscribes itself
		}
		s.log.Error("mqtt subscribe failed; retrying", "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-s.workCtx.Done():
			return
		}
		backoff = min(2*backoff, retryMax)
	}
	if s.connGen.Load() != gen {
		return
	}
	s.subscribed.Store(true)
	s.log.Info("mqtt connected and subscribed", "broker", redactURL(s.cfg.MQTT.Broker), "filters", len(filters))
}

// subscribe subscribes to filters and checks every SUBACK return code. It
// registers no per-filter handler: every message reaches the default
// handler exactly once, even where filters overlap, and is routed there.
func subscribe(c paho.Client, filters map[string]byte) error {
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(subscribeTimeout) {
		return fmt.Errorf("no SUBACK within %s", subscribeTimeout)
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for filter, code := range st.Result() {
			if code > 2 {
				return fmt.Errorf("subscription to %s refused with code %#x (check the user's ACL for $SYS topics)", filter, code)
			}
		}
	}
	return nil
}

func (s *Service) onConnectionLost(_ paho.Client, err error) {
	s.connGen.Add(1)
	s.subscribed.Store(false)
	s.hold()
	s.log.Warn("mqtt connection lost; reconnecting", "err", err)
}

func (s *Service) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	switch n := n.(type) {
	case paho.ConnectionNotificationFailed:
		s.log.Warn("mqtt connection attempt failed; retrying", "err", n.Reason)
	case paho.ConnectionNotificationBrokerFailed:
		s.log.Warn("mqtt connection attempt failed; retrying", "broker", redactURL(n.Broker.String()), "err", n.Reason)
	}
}

// openConn opens the broker connection (openConn) and keeps it as the
// connection the next messages arrive on, for their PUBACKs.
func (s *Service) openConn(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	c, err := openConn(u, o)
	if err != nil {
		return nil, err
	}
	bc := c.(*bufferedConn)
	s.conn.Store(bc)
	return bc, nil
}

// onMessage runs on paho's delivery goroutine, one message at a time in
// receive order (OrderMatters true). It parses the message and starts its
// publish without waiting for JetStream: the message is acknowledged by the
// acker once its fate is durable (see pipeline.go). It waits only for a
// slot of max_in_flight.
func (s *Service) onMessage(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return // not acknowledged: the broker redelivers it to the next session
	}
	s.wg.Add(1)
	s.mu.Unlock()
	if !s.acquire() {
		s.wg.Done()
		return
	}
	// paho opens a connection only after the previous one's messages were
	// all handed over: this one came on the latest.
	it := newItem(m, s.conn.Load())
	s.acks.push(it)

	topic := m.Topic()
	r := match(s.routes, topic)
	switch {
	case r == nil:
		// A filter no enabled source claims: left in the persistent
		// session by an earlier configuration. Counted, not stored.
		s.metrics.events.Add(s.bgCtx, 1, s.metrics.outcome(outcomeIgnored, SourceUnrouted))
		s.ignored.Add(1)
		s.log.Debug("mqtt message on a topic no enabled source claims; ignored", "topic", topic)
		s.acks.complete(it, true)
	case r.heartbeat:
		s.heartbeats.Add(1)
		s.heard(heartbeatNode(topic), string(m.Payload()))
		s.acks.complete(it, true)
	default:
		in := input{source: r.source, topic: topic, payload: m.Payload(), retained: m.Retained()}
		s.prepare(s.workCtx, in, r.parse, r.emqxNode, &it.p)
		if it.p.msg == nil {
			s.acks.complete(it, it.p.res.stored)
			return
		}
		s.pub.publish(it)
	}
}
