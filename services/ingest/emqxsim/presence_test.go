package emqxsim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestDisconnectReason(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  string
	}{
		{nil, "closed"},
		{packets.CodeDisconnect, "normal"},
		{packets.CodeDisconnectWillMessage, "normal"},
		{packets.ErrSessionTakenOver, "takenover"},
		{packets.ErrKeepAliveTimeout, "keepalive_timeout"},
		{packets.ErrAdministrativeAction, "kicked"},
		{packets.ErrServerShuttingDown, "server_shutting_down"},
		{packets.ErrNotAuthorized, "not_authorized"},
		{packets.ErrBadUsernameOrPassword, "bad_username_or_password"},
		{packets.ErrPacketTooLarge, "packet_too_large"},
		{packets.ErrReceiveMaximum, "receive_maximum_exceeded"},
		{packets.ErrPendingClientWritesExceeded, "quota_exceeded"},
		{packets.ErrProtocolViolationSecondConnect, "protocol_error"},
		{packets.ErrMalformedTopic, "malformed_packet"},
		{fmt.Errorf("read: %w", packets.ErrConnectionRateExceeded), "connection_rate_exceeded"},
		{io.EOF, "tcp_closed"},
		{fmt.Errorf("read fixed header: %w", io.ErrUnexpectedEOF), "tcp_closed"},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, "keepalive_timeout"},
		{&net.OpError{Op: "read", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}, "econnreset"},
		{&net.OpError{Op: "write", Err: &os.SyscallError{Syscall: "write", Err: syscall.EPIPE}}, "epipe"},
		{syscall.ETIMEDOUT, "etimedout"},
		{&net.OpError{Op: "read", Err: net.ErrClosed}, "closed"},
		{errors.New("something odd"), "internal_error"},
	} {
		if got := DisconnectReason(tc.cause); got != tc.want {
			t.Errorf("DisconnectReason(%v) = %q, want %q", tc.cause, got, tc.want)
		}
	}
}

func TestMatchDollar(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"$SYS/brokers/+/clients/+/connected", "$SYS/brokers/n/clients/d/connected", true},
		{"$SYS/brokers/+/clients/#", "$SYS/brokers/n/clients/a/b/disconnected", true},
		{"$SYS/#", "$SYS/brokers/n/uptime", true},
		{"$share/g/$SYS/brokers/+/uptime", "$SYS/brokers/n/uptime", true},
		{"$share/g", "$SYS", false},
		{"#", "$SYS/brokers/n/uptime", false},
		{"+/brokers/+/uptime", "$SYS/brokers/n/uptime", false},
		{"$SYS/brokers/+/clients/+/connected", "$SYS/brokers/n/clients/a/b/connected", false},
		{"$SYS/brokers/+/uptime", "$SYS/brokers/n/datetime", false},
		{"$SYS/brokers/n", "$SYS/brokers/n/uptime", false},
		{"#", "a/b", true},
		{"$SYS/#", "$SYS", true},
		{"a/+", "a", false},
		{"a/+/c", "a/b/c", true},
		{"$share/g/#", "$SYS/brokers/n/uptime", false},
		{"$share/g/#", "a/b", true},
	} {
		if got := matchDollar(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matchDollar(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
