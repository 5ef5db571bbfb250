package archiver

import _ "embed"

//go:embed config.example.yaml
var exampleConfig string

// ExampleConfig returns config.example.yaml: a complete stage config file
// that works against a local NATS and ClickHouse.
func ExampleConfig() string { return exampleConfig }
