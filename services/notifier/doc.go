// Package notifier is the fleetwatch stage that delivers alerts to chat.
//
// A Service consumes the ALERTS stream with the durable pull consumer
// "notifier", renders each AlertEvent for its receiver (a DingTalk robot or
// a Feishu bot, see notify/dingtalk and notify/feishu), sends it, and
// records every attempt as a DeliveryEvent in DELIVERIES. The message is
// acked only once the outcome is final (delivered or permanent) and that
// outcome is recorded in a NATS KV bucket keyed by the alert id, so a
// redelivered or replayed alert is never sent twice. Retryable and
// rate-limited attempts are nak'ed with a delay (exponential backoff with
// jitter, or the remote's retry-after), which JetStream keeps across
// restarts. A local rolling-window limit per receiver keeps the notifier
// under the remote limits; a DingTalk robot that is blocked anyway is paused
// for the whole block.
package notifier
