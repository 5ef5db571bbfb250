// Package notifier is the fleetwatch stage that delivers alerts to chat.
//
// A Service consumes the ALERTS stream with the durable pull consumer
// "notifier". Intake workers decode and check each AlertEvent (bad ones go
// to DEADLETTER, silenced and inhibited ones and ids already delivered are
// acked) and
// hold it for its receiver. One sender per receiver then sends what is
// held: one message per alert while the receiver's rate budget can carry
// them promptly, and otherwise ONE digest message for everything held
// (counts of firing and resolved, top groups, sample devices, "+N more"),
// paced at most one per digest interval. The budget is a rolling-window
// send log per receiver kept in a NATS KV bucket and changed only by
// compare-and-set, so it holds across every replica; a remote block
// (DingTalk's 10 minutes) is recorded there as a pause.
//
// Every attempt is recorded as a DeliveryEvent in DELIVERIES. An alert's
// message is acked only once its outcome is final (delivered, permanently
// failed, or folded into a digest that was delivered) and that outcome is
// recorded in the idempotency KV bucket under the alert id, so a
// redelivered or replayed alert is never sent twice. Held alerts are kept
// alive with in-progress acks; retries back off with jitter in process and,
// if the process dies, come back through JetStream's redelivery.
//
// A receiver may have an escalation chain: an alert still unresolved a
// step's delay after it started is copied to the step's receiver through
// ALERTS, and its resolved notification follows. The chain's state is one
// record per alert episode in a KV bucket, changed by compare-and-set and
// watched by every replica (see package escalate and escalator.go).
package notifier
