package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"
)

// stages are fleetwatch's four processes; each has a config file, an image
// and a Deployment.
var stages = []string{"ingest", "evaluator", "notifier", "archiver"}

// briefSections are the stage sections' keys the manifests rely on, used
// for a stage whose services/<stage>.Config does not exist yet.
var briefSections = map[string][]string{
	"ingest":    {"mqtt"},
	"evaluator": {"grace", "receivers"},
	"notifier":  {"receivers"},
	"archiver":  {"clickhouse"},
}

const (
	namespace = "fleetwatch"
	adminPort = 9464
)

// ---------------------------------------------------------------- configs --

// stageConfig is one stage's config file, as text and as a YAML tree.
type stageConfig struct {
	stage  string
	source string // file name or ConfigMap key, for messages
	node   yaml.Node
	values map[string]any
}

func parseStageConfig(t *testing.T, stage, source string, b []byte) stageConfig {
	t.Helper()
	c := stageConfig{stage: stage, source: source}
	if err := yaml.Unmarshal(b, &c.node); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	if err := yaml.Unmarshal(b, &c.values); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	return c
}

func (c stageConfig) get(keys ...string) any {
	var v any = c.values
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// checkStageConfig applies the rules every config file of a deployment
// shares: exactly the common sections plus the stage's own, every key known
// to the Go types the stage decodes, the admin endpoint on adminPort, the
// telemetry name, and secrets only through *_env / *_file indirections.
func checkStageConfig(t *testing.T, l *schemaLoader, c stageConfig) {
	t.Helper()
	var top []string
	for k := range c.values {
		top = append(top, k)
	}
	slices.Sort(top)
	want := slices.Sorted(slices.Values(append(slices.Clone(commonSections), c.stage)))
	if !slices.Equal(top, want) {
		t.Errorf("%s: top-level keys %v, want %v", c.source, top, want)
	}
	for _, key := range [][]string{{"nats", "url"}, {"topology", "replicas"}, {"telemetry", "service_name"}, {"admin", "listen"}, {"log", "level"}, {"log", "format"}} {
		if c.get(key...) == nil {
			t.Errorf("%s: %s is not set", c.source, strings.Join(key, "."))
		}
	}
	s, found := stageSchema(t, l, c.stage)
	for _, e := range s.check("", &c.node) {
		t.Errorf("%s: %s", c.source, e)
	}
	if !found {
		t.Logf("%s: services/%s has no Config type yet: its section is checked for the keys %v only", c.source, c.stage, briefSections[c.stage])
	}
	for _, k := range briefSections[c.stage] {
		if c.get(c.stage, k) == nil {
			t.Errorf("%s: %s.%s is not set", c.source, c.stage, k)
		}
	}
	if got, want := c.get("telemetry", "service_name"), "fleetwatch-"+c.stage; got != want {
		t.Errorf("%s: telemetry.service_name %v, want %s", c.source, got, want)
	}
	listen, _ := c.get("admin", "listen").(string)
	if host, port, err := net.SplitHostPort(listen); err != nil || host != "0.0.0.0" || port != fmt.Sprint(adminPort) {
		t.Errorf("%s: admin.listen %q, want 0.0.0.0:%d (probes and health checks reach it from outside the process)", c.source, listen, adminPort)
	}
	for _, e := range inlineSecrets("", &c.node) {
		t.Errorf("%s: %s", c.source, e)
	}
}

// secretKey matches settings that hold a secret themselves.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|api_?key|credentials?)$`)

// secretValue matches secrets written into a value, such as a webhook URL
// with its access token.
var secretValue = regexp.MustCompile(`(?i)(access_token=|/hook/|://[^/@\s]+:[^/@\s]+@)[^<\s]`)

// inlineSecrets lists the settings under n that carry a secret inline.
// Indirections (*_env, *_file) are the only allowed form.
func inlineSecrets(path string, n *yaml.Node) []string {
	var errs []string
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			errs = append(errs, inlineSecrets(p, c)...)
		}
	case yaml.MappingNode:
		for i := 0; i < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if v.Kind == yaml.ScalarNode && v.Value != "" && secretKey.MatchString(k.Value) {
				errs = append(errs, fmt.Sprintf("%s (line %d) holds a secret inline: use %s_env or %s_file", p, k.Line, k.Value, k.Value))
			}
			errs = append(errs, inlineSecrets(p, v)...)
		}
	case yaml.ScalarNode:
		if secretValue.MatchString(n.Value) {
			errs = append(errs, fmt.Sprintf("%s (line %d) holds a secret inline", path, n.Line))
		}
	}
	return errs
}

// envNames lists the environment variables a config reads secrets from.
func envNames(n *yaml.Node) []string {
	var names []string
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && strings.HasSuffix(c.Value, "_env") {
				names = append(names, n.Content[i+1].Value)
			}
			walk(c)
		}
	}
	walk(n)
	slices.Sort(names)
	return slices.Compact(names)
}

func TestInlineSecrets(t *testing.T) {
	doc := `
nats: {url: "nats://user:hunter2@nats:4222", password_env: NATS_PASSWORD, token_file: /run/t}
notifier:
  receivers:
    - dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=abc", secret: SEC123}
    - dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=<token>", secret_env: S}
    - feishu: {url: "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e", password: ""}
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	got := inlineSecrets("", &n)
	want := []string{
		"nats.url (line 2) holds a secret inline",
		"notifier.receivers[0].dingtalk.url (line 5) holds a secret inline",
		"notifier.receivers[0].dingtalk.secret (line 5) holds a secret inline: use secret_env or secret_file",
		"notifier.receivers[2].feishu.url (line 7) holds a secret inline",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("inlineSecrets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := envNames(&n); !slices.Equal(got, []string{"NATS_PASSWORD", "S"}) {
		t.Fatalf("envNames = %v", got)
	}
}

// checkTopologies requires one topology across a deployment's config files.
func checkTopologies(t *testing.T, configs []stageConfig, replicas int) {
	t.Helper()
	first := configs[0].get("topology")
	for _, c := range configs[1:] {
		if got := c.get("topology"); fmt.Sprint(got) != fmt.Sprint(first) {
			t.Errorf("%s: topology %v differs from %s's %v: every stage ensures the streams with its own", c.source, got, configs[0].source, first)
		}
	}
	if got, _ := configs[0].get("topology", "replicas").(int); got != replicas {
		t.Errorf("topology.replicas %d, want %d", got, replicas)
	}
}

// -------------------------------------------------------------------- k8s --

// k8sObject is one decoded document of deploy/k8s.
type k8sObject struct {
	file string
	kind string // apiVersion/kind
	obj  any
}

// k8sTypes maps apiVersion/kind to a constructor of the Go type its
// documents decode into, strictly.
var k8sTypes = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"keda.sh/v1alpha1/ScaledObject": func() any { return &map[string]any{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// splitDocuments splits a multi-document YAML file, dropping empty ones.
func splitDocuments(t *testing.T, b []byte) [][]byte {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs [][]byte
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		out, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
}

// loadK8s decodes every manifest in deploy/k8s (not the Helm values) into
// its API type with strict decoding: unknown or misspelt fields fail.
func loadK8s(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	for _, file := range files {
		if filepath.Base(file) == "nats-values.yaml" {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(t, b) {
			var tm metav1.TypeMeta
			if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s document %d: %v", file, i+1, err)
			}
			kind := tm.APIVersion + "/" + tm.Kind
			mk, ok := k8sTypes[kind]
			if !ok {
				t.Fatalf("%s document %d: unexpected %s", file, i+1, kind)
			}
			obj := mk()
			if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", file, i+1, kind, err)
			}
			objs = append(objs, k8sObject{file: filepath.Base(file), kind: kind, obj: obj})
		}
	}
	return objs
}

func byKind[T any](objs []k8sObject) map[string]*T {
	out := map[string]*T{}
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			if m, ok := any(v).(metav1.Object); ok {
				out[m.GetName()] = v
			}
		}
	}
	return out
}

func TestK8sManifests(t *testing.T) {
	objs := loadK8s(t)
	l := newSchemaLoader()
	deployments := byKind[appsv1.Deployment](objs)
	configMaps := byKind[corev1.ConfigMap](objs)
	secrets := byKind[corev1.Secret](objs)
	services := byKind[corev1.Service](objs)

	for _, o := range objs {
		if m, ok := o.obj.(metav1.Object); ok && o.kind != "v1/Namespace" && m.GetNamespace() != namespace {
			t.Errorf("%s: %s %s is in namespace %q, want %q", o.file, o.kind, m.GetName(), m.GetNamespace(), namespace)
		}
	}
	if ns := byKind[corev1.Namespace](objs); ns[namespace] == nil {
		t.Errorf("no Namespace %s", namespace)
	}

	var configs []stageConfig
	for _, stage := range stages {
		name := "fleetwatch-" + stage
		t.Run(stage, func(t *testing.T) {
			d := deployments[name]
			if d == nil {
				t.Fatalf("no Deployment %s", name)
			}
			c := checkDeployment(t, l, d, configMaps, secrets)
			configs = append(configs, c)
			checkService(t, services[name], d, c)
		})
	}
	if len(configs) == len(stages) {
		checkTopologies(t, configs, 3)
	}

	// Secrets are templates: placeholders only, never real values.
	for name, s := range secrets {
		if len(s.Data) > 0 {
			t.Errorf("Secret %s has data: templates use stringData placeholders", name)
		}
		for k, v := range s.StringData {
			if !regexp.MustCompile(`^<.+>$`).MatchString(v) {
				t.Errorf("Secret %s: %s is not a <placeholder>", name, k)
			}
		}
	}
}

// checkDeployment checks one stage's Deployment and returns its config.
func checkDeployment(t *testing.T, l *schemaLoader, d *appsv1.Deployment, configMaps map[string]*corev1.ConfigMap, secrets map[string]*corev1.Secret) stageConfig {
	t.Helper()
	stage := d.Labels["app.kubernetes.io/component"]
	switch stage {
	case "evaluator":
		// Partition leases: a standby, and rolling updates that hand the
		// leases over at a clean shutdown.
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("replicas %v, want at least 2 (a hot standby with partition leases)", d.Spec.Replicas)
		}
		ru := d.Spec.Strategy.RollingUpdate
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
			t.Errorf("strategy %+v: want RollingUpdate with maxUnavailable 0 (a new pod joins before an old one releases)", d.Spec.Strategy)
		}
		if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 30 {
			t.Errorf("terminationGracePeriodSeconds %v, want more than lease.shutdown_timeout (30s)", g)
		}
	default:
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("replicas %v, want 1 for now", d.Spec.Replicas)
		}
		if stage == "ingest" && d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("strategy %q: a rolling update would run two %ss at once", d.Spec.Strategy.Type, stage)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}

	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	ctr := pod.Containers[0]

	if repo, tag := imageRef(ctr.Image); repo != "fleetwatch/"+stage || tag == "" || tag == "latest" {
		t.Errorf("image %q: want fleetwatch/%s with a pinned tag (not latest)", ctr.Image, stage)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := ctr.Resources.Requests[r]
		lim, okLim := ctr.Resources.Limits[r]
		if !okReq || !okLim || req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %v limit %v; want both, request <= limit", r, req.String(), lim.String())
		}
	}
	csc := ctr.SecurityContext
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, all capabilities dropped", csc)
	}

	port := containerPort(ctr, "admin")
	if port != adminPort {
		t.Errorf("admin port %d, want %d", port, adminPort)
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"liveness":  {ctr.LivenessProbe, "/healthz"},
		"readiness": {ctr.ReadinessProbe, "/readyz"},
		"startup":   {ctr.StartupProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || resolvePort(ctr, p.probe.HTTPGet.Port) != adminPort {
			t.Errorf("%s probe GETs %s on %v, want %s on the admin port", name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// The config file the container is told to read is in a ConfigMap.
	configPath := flagValue(ctr.Args, "--config")
	if configPath == "" {
		t.Fatalf("args %q have no --config", ctr.Args)
	}
	cm, key := mountedConfigMap(t, pod, ctr, configPath, configMaps)
	if cm == nil {
		t.Fatalf("config file %s is not mounted from a ConfigMap", configPath)
	}
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s (for %s)", cm.Name, key, configPath)
	}
	c := parseStageConfig(t, stage, "ConfigMap "+cm.Name+" "+key, []byte(text))
	checkStageConfig(t, l, c)

	if stage == "evaluator" {
		// Several replicas need partition leases, each under its own name.
		if c.get("evaluator", "lease") == nil {
			t.Errorf("%s: no evaluator.lease: %d replicas would all evaluate every device", c.source, *d.Spec.Replicas)
		}
		named := false
		for _, e := range ctr.Env {
			named = named || e.Name == "FLEETWATCH_EVALUATOR_REPLICA" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
				e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		}
		if lr, _ := c.get("evaluator", "lease", "replica").(string); lr == "" && !named {
			t.Error("evaluator: lease.replica is not set and FLEETWATCH_EVALUATOR_REPLICA does not come from metadata.name")
		}
	}
	if port := apiPort(t, c); port != 0 && containerPort(ctr, "api") != port {
		t.Errorf("%s: evaluator.api.listen port %d, but the container's api port is %d", c.source, port, containerPort(ctr, "api"))
	}
	checkMountedFiles(t, pod, ctr, c, configMaps, secrets)
	for _, m := range ctr.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable", m.Name)
		}
	}

	// Every secret the config reads from the environment is provided, from
	// a Secret that has it.
	for _, env := range envNames(&c.node) {
		if !secretProvides(ctr, secrets, env) {
			t.Errorf("%s reads $%s, which no Secret in secrets.yaml provides to the container", c.source, env)
		}
	}
	for _, e := range ctr.Env {
		if e.Value != "" && secretKey.MatchString(e.Name) {
			t.Errorf("env %s is set inline: use a secretKeyRef", e.Name)
		}
	}
	return c
}

// checkService checks a stage's Service: it selects the stage's pods and
// exposes the admin port, plus the evaluator's API port when the config
// turns the API on; every port reaches a port of the container.
func checkService(t *testing.T, svc *corev1.Service, d *appsv1.Deployment, c stageConfig) {
	t.Helper()
	if svc == nil {
		t.Errorf("no Service %s for the admin port", d.Name)
		return
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service %s selects %s=%s, which the pods do not carry", svc.Name, k, v)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("Service %s has no selector", svc.Name)
	}
	ctr := d.Spec.Template.Spec.Containers[0]
	want := map[string]int32{"admin": adminPort}
	if port := apiPort(t, c); port != 0 {
		want["api"] = port
	}
	got := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		target := resolvePort(ctr, p.TargetPort)
		if target == 0 {
			t.Errorf("Service %s port %s targets %s, which is not a container port", svc.Name, p.Name, p.TargetPort.String())
		}
		if p.Port != target {
			t.Errorf("Service %s port %s is %d but targets %d: keep them equal", svc.Name, p.Name, p.Port, target)
		}
		got[p.Name] = target
	}
	if !maps.Equal(got, want) {
		t.Errorf("Service %s ports %v, want %v (admin, and the evaluator's api when evaluator.api.listen is set)", svc.Name, got, want)
	}
}

// apiPort returns the port of evaluator.api.listen (0: the API is off, or
// the config is not the evaluator's). The API must listen on every
// interface, or the Service and the published compose port cannot reach it.
func apiPort(t *testing.T, c stageConfig) int32 {
	t.Helper()
	if c.stage != "evaluator" {
		return 0
	}
	listen, _ := c.get("evaluator", "api", "listen").(string)
	if listen == "" {
		return 0
	}
	host, port, err := net.SplitHostPort(listen)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || host != "0.0.0.0" || n < 1 || n > 65535 {
		t.Errorf("%s: evaluator.api.listen %q, want 0.0.0.0:<port> (reached from outside the process)", c.source, listen)
		return 0
	}
	return int32(n)
}

// fileSettings lists the *_file settings of a config (path → file).
func fileSettings(n *yaml.Node) map[string]string {
	out := map[string]string{}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(path, c)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		case yaml.MappingNode:
			for i := 0; i < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := join(path, k.Value)
				if strings.HasSuffix(k.Value, "_file") && v.Kind == yaml.ScalarNode && v.Value != "" {
					out[p] = v.Value
				}
				walk(p, v)
			}
		}
	}
	walk("", n)
	return out
}

// checkMountedFiles requires every *_file setting of the config to name a
// file mounted into the container: from a Secret of secrets.yaml that has
// the key, or from a ConfigMap.
func checkMountedFiles(t *testing.T, pod corev1.PodSpec, ctr corev1.Container, c stageConfig, configMaps map[string]*corev1.ConfigMap, secrets map[string]*corev1.Secret) {
	t.Helper()
	for setting, file := range fileSettings(&c.node) {
		vol, key, ok := mountedVolume(pod, ctr, file)
		switch {
		case !ok:
			t.Errorf("%s: %s %s is not mounted into the container", c.source, setting, file)
		case vol.Secret != nil:
			if s := secrets[vol.Secret.SecretName]; s == nil || s.StringData[key] == "" {
				t.Errorf("%s: %s %s comes from Secret %s key %s, which secrets.yaml does not define", c.source, setting, file, vol.Secret.SecretName, key)
			}
		case vol.ConfigMap != nil:
			if cm := configMaps[vol.ConfigMap.Name]; cm == nil || cm.Data[key] == "" {
				t.Errorf("%s: %s %s comes from ConfigMap %s key %s, which is not defined", c.source, setting, file, vol.ConfigMap.Name, key)
			}
		default:
			t.Errorf("%s: %s %s comes from volume %s: use a Secret or a ConfigMap", c.source, setting, file, vol.Name)
		}
	}
}

// mountedVolume finds the volume and key (a Secret's or ConfigMap's item)
// behind a file path in the container.
func mountedVolume(pod corev1.PodSpec, c corev1.Container, file string) (corev1.Volume, string, bool) {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			var items []corev1.KeyToPath
			switch {
			case v.Secret != nil:
				items = v.Secret.Items
			case v.ConfigMap != nil:
				items = v.ConfigMap.Items
			}
			if len(items) == 0 {
				return v, rel, true
			}
			for _, it := range items {
				if it.Path == rel {
					return v, it.Key, true
				}
			}
			return v, "", false // the volume projects other items only
		}
	}
	return corev1.Volume{}, "", false
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func resolvePort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.String {
		return containerPort(c, p.StrVal)
	}
	return p.IntVal
}

func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// mountedConfigMap finds the ConfigMap and key behind a file path in the
// container.
func mountedConfigMap(t *testing.T, pod corev1.PodSpec, c corev1.Container, file string, configMaps map[string]*corev1.ConfigMap) (*corev1.ConfigMap, string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			if !m.ReadOnly {
				t.Errorf("volume %s is mounted writable", m.Name)
			}
			key := rel
			for _, it := range v.ConfigMap.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			cm := configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("volume %s refers to ConfigMap %s, which is not defined", v.Name, v.ConfigMap.Name)
			}
			return cm, key
		}
	}
	return nil, ""
}

func secretProvides(c corev1.Container, secrets map[string]*corev1.Secret, env string) bool {
	for _, e := range c.Env {
		if e.Name == env && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			s := secrets[e.ValueFrom.SecretKeyRef.Name]
			return s != nil && s.StringData[e.ValueFrom.SecretKeyRef.Key] != ""
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			if s := secrets[ef.SecretRef.Name]; s != nil && s.StringData[env] != "" {
				return true
			}
		}
	}
	return false
}

// imageRef splits an image reference into repository and tag.
func imageRef(image string) (repo, tag string) {
	name := image
	if i := strings.Index(name, "@"); i >= 0 {
		return name[:i], name[i+1:] // pinned by digest
	}
	slash := strings.LastIndex(name, "/")
	if i := strings.LastIndex(name, ":"); i > slash {
		return name[:i], name[i+1:]
	}
	return name, ""
}

func TestK8sKustomization(t *testing.T) {
	objs := loadK8s(t)
	var k *kustomization
	for _, o := range objs {
		if v, ok := o.obj.(*kustomization); ok {
			k = v
		}
	}
	if k == nil {
		t.Fatal("no kustomization.yaml")
	}
	// Applied separately: secrets (templates), KEDA (needs its CRDs), the
	// kustomization itself; Helm values are not manifests.
	separate := []string{"secrets.yaml", "keda-scaledobjects.yaml", "kustomization.yaml", "nats-values.yaml"}
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	var want []string
	for _, f := range files {
		if !slices.Contains(separate, filepath.Base(f)) {
			want = append(want, filepath.Base(f))
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Fatalf("kustomization resources %v, want %v", got, want)
	}
}

// eventsConstants reads the stream and consumer names from pkg/events, so
// that the KEDA triggers follow the code.
func eventsConstants(t *testing.T) map[string]string {
	t.Helper()
	p, err := newSchemaLoader().pkg("pkg/events")
	if err != nil || p == nil {
		t.Fatalf("pkg/events: %v", err)
	}
	return p.constants
}

func TestKEDAScaledObjects(t *testing.T) {
	consts := eventsConstants(t)
	// Which stream each scaled consumer reads (pkg/events constant names).
	consumerStream := map[string]string{
		"ConsumerNotifier":           "StreamAlerts",
		"ConsumerArchiverPresence":   "StreamPresence",
		"ConsumerArchiverAlerts":     "StreamAlerts",
		"ConsumerArchiverDeliveries": "StreamDeliveries",
	}
	known := map[string]string{} // consumer → stream, by value
	for c, s := range consumerStream {
		if consts[c] == "" || consts[s] == "" {
			t.Fatalf("pkg/events has no %s or %s", c, s)
		}
		known[consts[c]] = consts[s]
	}
	values := natsValues(t)
	monitorPort := fmt.Sprint(dig(values, "config", "monitor", "port"))

	objs := loadK8s(t)
	deployments := byKind[appsv1.Deployment](objs)
	scaled := map[string]bool{}
	var consumers []string
	for _, o := range objs {
		if o.kind != "keda.sh/v1alpha1/ScaledObject" {
			continue
		}
		if o.file != "keda-scaledobjects.yaml" {
			t.Errorf("%s: ScaledObjects belong in keda-scaledobjects.yaml", o.file)
		}
		so := *o.obj.(*map[string]any)
		name, _ := dig(so, "metadata", "name").(string)
		if ns := dig(so, "metadata", "namespace"); ns != namespace {
			t.Errorf("ScaledObject %s: namespace %v", name, ns)
		}
		target, _ := dig(so, "spec", "scaleTargetRef", "name").(string)
		if deployments[target] == nil {
			t.Errorf("ScaledObject %s scales %q, which is not a Deployment here", name, target)
		}
		scaled[target] = true
		minR, _ := dig(so, "spec", "minReplicaCount").(float64)
		maxR, _ := dig(so, "spec", "maxReplicaCount").(float64)
		if minR < 1 || maxR < minR {
			t.Errorf("ScaledObject %s: replicas %v..%v; want at least 1 (stages stay ready)", name, minR, maxR)
		}
		triggers, _ := dig(so, "spec", "triggers").([]any)
		if len(triggers) == 0 {
			t.Errorf("ScaledObject %s has no triggers", name)
		}
		for i, tr := range triggers {
			trm, _ := tr.(map[string]any)
			if trm["type"] != "nats-jetstream" {
				t.Errorf("ScaledObject %s trigger %d: type %v, want nats-jetstream", name, i, trm["type"])
			}
			md, _ := trm["metadata"].(map[string]any)
			for _, key := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
				if v, ok := md[key].(string); !ok || v == "" {
					t.Errorf("ScaledObject %s trigger %d: metadata.%s must be a non-empty string", name, i, key)
				}
			}
			stream, consumer := md["stream"], md["consumer"]
			if want, ok := known[fmt.Sprint(consumer)]; !ok || stream != want {
				t.Errorf("ScaledObject %s trigger %d: consumer %v on stream %v is not a fleetwatch consumer (pkg/events)", name, i, consumer, stream)
			}
			consumers = append(consumers, fmt.Sprint(consumer))
			endpoint := fmt.Sprint(md["natsServerMonitoringEndpoint"])
			if want := "nats-headless." + namespace + ".svc.cluster.local:" + monitorPort; endpoint != want {
				t.Errorf("ScaledObject %s trigger %d: endpoint %s, want %s (the chart's headless service, monitor port)", name, i, endpoint, want)
			}
		}
	}
	if scaled["fleetwatch-evaluator"] {
		t.Error("the evaluator is autoscaled on consumer lag: with lease.partitions 1 one replica does all the work, so more replicas add no throughput (raise lease.partitions first, docs/scaling.md)")
	}
	slices.Sort(consumers)
	if want := slices.Sorted(maps.Keys(known)); !slices.Equal(consumers, want) {
		t.Errorf("scaled consumers %v, want %v", consumers, want)
	}
}

func natsValues(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("k8s", "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := sigsyaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestNATSHelmValues(t *testing.T) {
	v := natsValues(t)
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"config", "jetstream", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "pvc", "enabled"}, true},
		{[]string{"config", "cluster", "enabled"}, true},
		{[]string{"config", "cluster", "replicas"}, float64(3)},
		{[]string{"config", "monitor", "enabled"}, true},
	}
	for _, c := range checks {
		if got := dig(v, c.path...); got != c.want {
			t.Errorf("%s = %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if tag, _ := dig(v, "container", "image", "tag").(string); tag == "" || tag == "latest" {
		t.Errorf("container.image.tag %q: pin a version", tag)
	}

	// JetStream reserves every stream's max_bytes on each replica at
	// creation: the streams (pkg/events Stream* constants) must fit in one
	// server's file store, and leave room for the KV buckets, which reserve
	// nothing but hold the notifier's records, silences and the inventory.
	streams := 0
	for name := range eventsConstants(t) {
		if strings.HasPrefix(name, "Stream") {
			streams++
		}
	}
	if streams < 5 {
		t.Fatalf("pkg/events declares %d Stream* constants, want at least 5 (PRESENCE, ALERTS, DELIVERIES, DEADLETTER, NODES)", streams)
	}
	size, err := resource.ParseQuantity(fmt.Sprint(dig(v, "config", "jetstream", "fileStore", "pvc", "size")))
	if err != nil {
		t.Fatalf("fileStore.pvc.size: %v", err)
	}
	if dig(v, "config", "jetstream", "fileStore", "maxSize") != nil {
		t.Fatal("fileStore.maxSize is set: this test assumes max_file_store = the PVC size")
	}
	cms := byKind[corev1.ConfigMap](loadK8s(t))
	for _, stage := range stages {
		cm := cms["fleetwatch-"+stage]
		if cm == nil {
			t.Fatalf("no ConfigMap fleetwatch-%s", stage)
		}
		c := parseStageConfig(t, stage, cm.Name, []byte(cm.Data[stage+".yaml"]))
		maxBytes, _ := c.get("topology", "max_bytes").(int)
		if maxBytes <= 0 {
			t.Errorf("%s: topology.max_bytes %v: set it, the default 1 GiB per stream is sized for development", c.source, c.get("topology", "max_bytes"))
			continue
		}
		if need := int64(maxBytes) * int64(streams); need > size.Value()*9/10 {
			t.Errorf("%s: %d streams x max_bytes %d = %d bytes leave less than a tenth of the %s file store for the KV buckets: lower max_bytes or raise the PVC size", c.source, streams, maxBytes, need, size.String())
		}
	}
}

// ---------------------------------------------------------------- compose --

type composeFile struct {
	Name     string                    `yaml:"name"`
	XStage   map[string]any            `yaml:"x-stage"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Secrets  map[string]composeSecret  `yaml:"secrets"`
}

// composeSecret is a top-level secret: a file on the host, mounted at
// /run/secrets/<name> in the services that list it.
type composeSecret struct {
	File string `yaml:"file"`
}

type composeService struct {
	Image       string                      `yaml:"image"`
	Build       *composeBuild               `yaml:"build"`
	Command     []string                    `yaml:"command"`
	Restart     string                      `yaml:"restart"`
	ReadOnly    bool                        `yaml:"read_only"`
	Tmpfs       []string                    `yaml:"tmpfs"`
	CapDrop     []string                    `yaml:"cap_drop"`
	SecurityOpt []string                    `yaml:"security_opt"`
	Environment map[string]string           `yaml:"environment"`
	EnvFile     []string                    `yaml:"env_file"`
	Volumes     []string                    `yaml:"volumes"`
	Ports       []string                    `yaml:"ports"`
	Secrets     []string                    `yaml:"secrets"`
	Ulimits     map[string]map[string]int   `yaml:"ulimits"`
	DependsOn   map[string]composeDependsOn `yaml:"depends_on"`
	Healthcheck *composeHealthcheck         `yaml:"healthcheck"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

type composeDependsOn struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

const composeDir = "compose"

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// interpolate resolves compose's ${VAR:-default} to the default.
var interpolation = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}`)

func interpolate(s string) string { return interpolation.ReplaceAllString(s, "$1") }

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	l := newSchemaLoader()

	want := append([]string{"clickhouse", "grafana", "nats"}, stages...)
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(c.Services)); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}

	for name, s := range c.Services {
		if repo, tag := imageRef(interpolate(s.Image)); repo == "" || tag == "" || tag == "latest" {
			t.Errorf("%s: image %q: pin a tag (not latest)", name, s.Image)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 {
			t.Errorf("%s: no health check", name)
		}
		for k, v := range s.Environment {
			if secretKey.MatchString(k) || secretValue.MatchString(v) {
				t.Errorf("%s: environment %s is inlined: secrets belong in an env_file", name, k)
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %s is published on every interface: bind it to 127.0.0.1", name, p)
			}
		}
	}
	if nats := c.Services["nats"]; !slices.Contains(nats.Command, "--jetstream") || flagValue(nats.Command, "--store_dir") == "" ||
		!slices.ContainsFunc(nats.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+flagValue(nats.Command, "--store_dir")) }) {
		t.Errorf("nats: command %q volumes %q: want JetStream with its store dir on a volume", nats.Command, nats.Volumes)
	}

	var configs []stageConfig
	for _, stage := range stages {
		t.Run(stage, func(t *testing.T) {
			s := c.Services[stage]
			if repo, _ := imageRef(interpolate(s.Image)); repo != "fleetwatch/"+stage {
				t.Errorf("image %q, want fleetwatch/%s", s.Image, stage)
			}
			if s.Build == nil || s.Build.Args["SERVICE"] != stage {
				t.Fatalf("build %+v: want the repository Dockerfile with SERVICE=%s", s.Build, stage)
			}
			dockerfile := filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)
			df, err := os.ReadFile(dockerfile)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if !bytes.Contains(df, []byte("ARG SERVICE")) || !bytes.Contains(df, []byte("./services/${SERVICE}/cmd/${SERVICE}")) {
				t.Errorf("%s does not build ./services/${SERVICE}/cmd/${SERVICE}", dockerfile)
			}
			if _, err := os.Stat(filepath.Join(composeDir, s.Build.Context, "services", stage, "go.mod")); err != nil {
				t.Errorf("build context: %v", err)
			}
			if dep, ok := s.DependsOn["nats"]; !ok || dep.Condition != "service_healthy" {
				t.Errorf("depends_on %v: want nats: {condition: service_healthy}", s.DependsOn)
			}
			if stage == "archiver" && s.DependsOn["clickhouse"].Condition != "service_healthy" {
				t.Errorf("depends_on %v: want clickhouse: {condition: service_healthy}", s.DependsOn)
			}
			if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
				t.Errorf("read_only %v cap_drop %v: want a read-only root and no capabilities", s.ReadOnly, s.CapDrop)
			}
			if hc := s.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/healthcheck", fmt.Sprintf("http://127.0.0.1:%d/healthz", adminPort)}) {
				t.Errorf("healthcheck %+v: want /healthcheck on the admin /healthz", hc)
			}

			// The config file the stage reads is mounted from config/.
			configPath := flagValue(s.Command, "--config")
			var host string
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) == 3 && parts[1] == configPath && parts[2] == "ro" {
					host = parts[0]
				}
			}
			if configPath == "" || host == "" {
				t.Fatalf("command %q volumes %q: want --config <path> with the file mounted read-only", s.Command, s.Volumes)
			}
			if path.Clean(host) != "config/"+stage+".yaml" {
				t.Errorf("config mounted from %s, want ./config/%s.yaml", host, stage)
			}
			b, err := os.ReadFile(filepath.Join(composeDir, host))
			if err != nil {
				t.Fatalf("mounted config: %v", err)
			}
			cfg := parseStageConfig(t, stage, "compose/"+strings.TrimPrefix(host, "./"), b)
			checkStageConfig(t, l, cfg)
			configs = append(configs, cfg)

			// The API port is published (on the loopback), and every file
			// the config reads is a compose secret or a read-only mount.
			if port := apiPort(t, cfg); port != 0 && !slices.Contains(s.Ports, fmt.Sprintf("127.0.0.1:%d:%d", port, port)) {
				t.Errorf("ports %v: want 127.0.0.1:%d:%d for evaluator.api.listen", s.Ports, port, port)
			}
			for setting, file := range fileSettings(&cfg.node) {
				if name, ok := strings.CutPrefix(file, "/run/secrets/"); ok {
					if !slices.Contains(s.Secrets, name) {
						t.Errorf("%s: %s %s, but the service does not list the secret %s", cfg.source, setting, file, name)
					}
					continue
				}
				if !slices.ContainsFunc(s.Volumes, func(v string) bool {
					parts := strings.Split(v, ":")
					return len(parts) == 3 && parts[2] == "ro" && (parts[1] == file || strings.HasPrefix(file, strings.TrimSuffix(parts[1], "/")+"/"))
				}) {
					t.Errorf("%s: %s %s is neither a compose secret (/run/secrets/<name>) nor a read-only mount", cfg.source, setting, file)
				}
			}

			// Secrets the config reads from the environment come from the
			// service's env_file, documented by its .example template.
			env := envNames(&cfg.node)
			if len(env) == 0 && len(s.EnvFile) > 0 {
				t.Errorf("env_file %v, but the config reads no secret from the environment", s.EnvFile)
			}
			defined := map[string]bool{}
			for _, f := range s.EnvFile {
				if !strings.HasPrefix(f, "secrets/") {
					t.Errorf("env_file %s: keep secrets under compose/secrets/ (git-ignored)", f)
				}
				for k, v := range readEnvFile(t, filepath.Join(composeDir, f+".example")) {
					defined[k] = true
					if !regexp.MustCompile(`^<.+>$`).MatchString(v) {
						t.Errorf("%s.example: %s is not a <placeholder>", f, k)
					}
				}
			}
			for _, e := range env {
				if !defined[e] {
					t.Errorf("%s reads $%s, which no env_file template (%v) defines", cfg.source, e, s.EnvFile)
				}
				if _, ok := s.Environment[e]; ok {
					t.Errorf("environment sets %s inline: it belongs in the env_file", e)
				}
			}
		})
	}
	if len(configs) == len(stages) {
		checkTopologies(t, configs, 1)
	}

	ignore, err := os.ReadFile(filepath.Join(composeDir, ".gitignore"))
	if err != nil || !strings.Contains(string(ignore), "secrets/*.env") {
		t.Errorf("compose/.gitignore must ignore secrets/*.env: %v", err)
	}

	// Secret files live under secrets/ and are git-ignored; every secret a
	// service lists is defined.
	ignored := strings.Fields(string(ignore))
	for name, sec := range c.Secrets {
		f := path.Clean(sec.File)
		if !strings.HasPrefix(f, "secrets/") {
			t.Errorf("secret %s: file %s: keep secrets under compose/secrets/", name, sec.File)
		}
		if !slices.ContainsFunc(ignored, func(pattern string) bool { ok, _ := path.Match(pattern, f); return ok }) {
			t.Errorf("secret %s: file %s is not git-ignored: add it to compose/.gitignore", name, sec.File)
		}
	}
	for svc, s := range c.Services {
		for _, name := range s.Secrets {
			if _, ok := c.Secrets[name]; !ok {
				t.Errorf("%s: secret %s is not defined under the top-level secrets", svc, name)
			}
		}
	}
}

// readEnvFile parses KEY=VALUE lines (compose env_file syntax, no quotes).
func readEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("env_file template: %v", err)
	}
	vars := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s:%d: not KEY=VALUE", file, i+1)
			continue
		}
		vars[k] = v
	}
	return vars
}
