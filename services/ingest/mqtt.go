package ingest

import (
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// subscribeTimeout bounds the wait for a SUBACK.
const subscribeTimeout = 10 * time.Second

// clientOptions configures paho: QoS 1 into a persistent session, manual
// acknowledgement, handlers in their own goroutines (a blocked handler must
// not stall paho's reader and with it the keepalive), reconnect forever.
func (s *Service) clientOptions() *paho.ClientOptions {
	m := s.cfg.MQTT
	opts := paho.NewClientOptions().
		AddBroker(m.Broker).
		SetClientID(m.ClientID).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(false).
		SetKeepAlive(m.KeepAlive).
		SetConnectTimeout(m.ConnectTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(m.MaxReconnectInterval).
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(s.onConnectionLost).
		SetConnectionNotificationHandler(s.onNotification)
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

// onMessage runs in its own goroutine per message (OrderMatters false). It
// acknowledges the message only when process says it is stored.
func (s *Service) onMessage(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return // not acknowledged: the broker redelivers it to the next session
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	select {
	case s.inflight <- struct{}{}:
	case <-s.workCtx.Done():
		return
	}
	s.metrics.inFlight.Add(s.workCtx, 1)
	defer func() { <-s.inflight; s.metrics.inFlight.Add(context.Background(), -1) }()

	topic := m.Topic()
	r := match(s.routes, topic)
	switch {
	case r == nil:
		// A filter no enabled source claims: left in the persistent
		// session by an earlier configuration. Counted, not stored.
		s.ignored.Add(1)
		s.metrics.events.Add(s.workCtx, 1, outcomeAttrs(outcomeIgnored, SourceUnrouted))
		s.log.Debug("mqtt message on a topic no enabled source claims; ignored", "topic", topic)
		m.Ack()
	case r.heartbeat:
		s.heartbeats.Add(1)
		s.heard(heartbeatNode(topic), string(m.Payload()))
		m.Ack()
	default:
		in := input{source: r.source, topic: topic, payload: m.Payload(), retained: m.Retained()}
		if s.process(s.workCtx, in, r.parse, r.emqxNode).stored {
			m.Ack()
		}
	}
}
