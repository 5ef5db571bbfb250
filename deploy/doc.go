// Package deploy holds fleetwatch's deployment manifests — compose/ for one
// host, k8s/ for Kubernetes (with NATS from its Helm chart and KEDA for
// autoscaling) — and the tests that keep them consistent with the code: every
// manifest decodes strictly into its Kubernetes API type, every config file
// matches the stages' config schema, and no secret is written inline.
package deploy
