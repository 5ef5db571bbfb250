module github.com/fleetwatch/fleetwatch/services/archiver

go 1.26.0

replace (
	github.com/fleetwatch/fleetwatch/pkg/events => ../../pkg/events
	github.com/fleetwatch/fleetwatch/pkg/stage => ../../pkg/stage
	github.com/fleetwatch/fleetwatch/pkg/telemetry => ../../pkg/telemetry
)
