package deploy

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The config files are checked against the Go types the stages decode them
// into, read from the repository's sources with go/ast: the deploy module
// needs no dependency on the stages, yet a renamed or removed key breaks
// this test instead of a deployment.

// modulePrefix maps in-repo import paths to directories under repoRoot.
const modulePrefix = "github.com/fleetwatch/fleetwatch/"

// repoRoot is the repository root, seen from deploy/.
const repoRoot = ".."

type schemaKind int

const (
	anyValue schemaKind = iota // scalars, maps with free keys, custom unmarshalers
	object                     // a struct: only its keys
	list                       // a slice: every element has elem's schema
)

// schema is the set of YAML keys a Go type accepts (yaml.v3 rules).
type schema struct {
	kind   schemaKind
	fields map[string]*schema
	elem   *schema
}

func (s *schema) keys() []string {
	var ks []string
	for k := range s.fields {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// check reports every key of n that the schema does not know, by path.
func (s *schema) check(path string, n *yaml.Node) []string {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else {
			n = n.Content[0]
		}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	var errs []string
	switch s.kind {
	case object:
		if n.Kind != yaml.MappingNode {
			return []string{fmt.Sprintf("%s (line %d) must be a mapping", path, n.Line)}
		}
		for i := 0; i < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" { // merge key: the merged mapping's keys count
				errs = append(errs, s.check(path, v)...)
				continue
			}
			f, ok := s.fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s (line %d) is not a setting; known: %s", join(path, k.Value), k.Line, strings.Join(s.keys(), ", ")))
				continue
			}
			errs = append(errs, f.check(join(path, k.Value), v)...)
		}
	case list:
		if n.Kind != yaml.SequenceNode {
			return []string{fmt.Sprintf("%s (line %d) must be a list", path, n.Line)}
		}
		for i, e := range n.Content {
			errs = append(errs, s.elem.check(fmt.Sprintf("%s[%d]", path, i), e)...)
		}
	}
	return errs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// goPackage is the parsed non-test sources of one directory.
type goPackage struct {
	types        map[string]*ast.TypeSpec
	imports      map[*ast.TypeSpec]map[string]string // per declaring file: name → path
	unmarshalers map[string]bool                     // types with an UnmarshalYAML method
	constants    map[string]string                   // string constants
}

// schemaLoader builds schemas from Go sources, caching packages and types.
type schemaLoader struct {
	root  string // directories are relative to it
	pkgs  map[string]*goPackage
	types map[string]*schema
}

func newSchemaLoader() *schemaLoader { return newSchemaLoaderAt(repoRoot) }

func newSchemaLoaderAt(root string) *schemaLoader {
	return &schemaLoader{root: root, pkgs: map[string]*goPackage{}, types: map[string]*schema{}}
}

// pkg parses dir (relative to the repository root). It returns nil when the
// directory has no Go sources.
func (l *schemaLoader) pkg(dir string) (*goPackage, error) {
	if p, ok := l.pkgs[dir]; ok {
		return p, nil
	}
	files, err := filepath.Glob(filepath.Join(l.root, dir, "*.go"))
	if err != nil {
		return nil, err
	}
	p := &goPackage{
		types:        map[string]*ast.TypeSpec{},
		imports:      map[*ast.TypeSpec]map[string]string{},
		unmarshalers: map[string]bool{},
		constants:    map[string]string{},
	}
	fset := token.NewFileSet()
	n := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		n++
		imports := map[string]string{}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			local := path[strings.LastIndex(path, "/")+1:]
			if imp.Name != nil {
				local = imp.Name.Name
			}
			imports[local] = path
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						p.types[s.Name.Name] = s
						p.imports[s] = imports
					case *ast.ValueSpec:
						for i, name := range s.Names {
							if i < len(s.Values) {
								if lit, ok := s.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
									p.constants[name.Name], _ = strconv.Unquote(lit.Value)
								}
							}
						}
					}
				}
			case *ast.FuncDecl:
				if d.Recv != nil && d.Name.Name == "UnmarshalYAML" && len(d.Recv.List) == 1 {
					t := d.Recv.List[0].Type
					if star, ok := t.(*ast.StarExpr); ok {
						t = star.X
					}
					if id, ok := t.(*ast.Ident); ok {
						p.unmarshalers[id.Name] = true
					}
				}
			}
		}
	}
	if n == 0 {
		p = nil
	}
	l.pkgs[dir] = p
	return p, nil
}

// named returns the schema of type name declared in dir, or nil when dir or
// the type does not exist (yet).
func (l *schemaLoader) named(dir, name string) (*schema, error) {
	key := dir + "." + name
	if s, ok := l.types[key]; ok {
		return s, nil
	}
	p, err := l.pkg(dir)
	if err != nil || p == nil {
		return nil, err
	}
	spec, ok := p.types[name]
	if !ok {
		return nil, nil
	}
	s := &schema{}
	l.types[key] = s // before recursing: recursive types end here
	if p.unmarshalers[name] {
		return s, nil // it decodes itself: any value
	}
	resolved, err := l.resolve(dir, p.imports[spec], spec.Type)
	if err != nil {
		return nil, err
	}
	*s = *resolved
	return s, nil
}

func (l *schemaLoader) resolve(dir string, imports map[string]string, expr ast.Expr) (*schema, error) {
	switch t := expr.(type) {
	case *ast.StarExpr:
		return l.resolve(dir, imports, t.X)
	case *ast.ArrayType:
		elem, err := l.resolve(dir, imports, t.Elt)
		if err != nil {
			return nil, err
		}
		if id, ok := t.Elt.(*ast.Ident); ok && id.Name == "byte" {
			return &schema{}, nil
		}
		return &schema{kind: list, elem: elem}, nil
	case *ast.Ident:
		if s, err := l.named(dir, t.Name); s != nil || err != nil {
			return s, err
		}
		return &schema{}, nil // a predeclared type
	case *ast.SelectorExpr:
		pkgName, ok := t.X.(*ast.Ident)
		if !ok {
			return &schema{}, nil
		}
		path := imports[pkgName.Name]
		if !strings.HasPrefix(path, modulePrefix) {
			return &schema{}, nil // time.Duration and other outside types
		}
		s, err := l.named(strings.TrimPrefix(path, modulePrefix), t.Sel.Name)
		if err != nil {
			return nil, err
		}
		if s == nil {
			return nil, fmt.Errorf("type %s.%s not found in %s", pkgName.Name, t.Sel.Name, path)
		}
		return s, nil
	case *ast.StructType:
		s := &schema{kind: object, fields: map[string]*schema{}}
		for _, f := range t.Fields.List {
			var tag string
			if f.Tag != nil {
				raw, _ := strconv.Unquote(f.Tag.Value)
				tag = reflect.StructTag(raw).Get("yaml")
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			fs, err := l.resolve(dir, imports, f.Type)
			if err != nil {
				return nil, err
			}
			if slices.Contains(strings.Split(opts, ","), "inline") {
				for k, v := range fs.fields {
					s.fields[k] = v
				}
				continue
			}
			names := f.Names
			if len(names) == 0 { // embedded without inline: a field named after the type
				names = []*ast.Ident{{Name: typeName(f.Type)}}
			}
			for _, n := range names {
				if !ast.IsExported(n.Name) {
					continue
				}
				key := name
				if key == "" {
					key = strings.ToLower(n.Name) // yaml.v3's default
				}
				s.fields[key] = fs
			}
		}
		return s, nil
	}
	return &schema{}, nil // maps, interfaces, funcs: any value
}

func typeName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return typeName(t.X)
	case *ast.SelectorExpr:
		return t.Sel.Name
	case *ast.Ident:
		return t.Name
	}
	return ""
}

// commonSections are the shared top-level keys of every stage's config file
// (pkg/stage.Common), as the deployment manifests use them.
var commonSections = []string{"admin", "log", "nats", "telemetry", "topology"}

// stageSchema is the schema of a stage's whole config file: stage.Common
// inline plus the stage's section, services/<stage>.Config. found is false
// when that package or type does not exist yet; the section is then any
// value.
func stageSchema(t *testing.T, l *schemaLoader, stage string) (s *schema, found bool) {
	t.Helper()
	common, err := l.named("pkg/stage", "Common")
	if err != nil || common == nil {
		t.Fatalf("pkg/stage.Common: %v (not found: %v)", err, common == nil)
	}
	s = &schema{kind: object, fields: map[string]*schema{}}
	for k, v := range common.fields {
		s.fields[k] = v
	}
	section, err := l.named("services/"+stage, "Config")
	if err != nil {
		t.Fatalf("services/%s.Config: %v", stage, err)
	}
	found = section != nil
	if !found {
		section = &schema{}
	}
	s.fields[stage] = section
	return s, found
}

func TestCommonSectionsMatchPkgStage(t *testing.T) {
	common, err := newSchemaLoader().named("pkg/stage", "Common")
	if err != nil || common == nil {
		t.Fatalf("pkg/stage.Common: %v", err)
	}
	if got := common.keys(); !slices.Equal(got, commonSections) {
		t.Fatalf("stage.Common has sections %v, the manifests use %v", got, commonSections)
	}
}

func TestSchemaLoader(t *testing.T) {
	dir := t.TempDir()
	src := `package x
import "time"
type Config struct {
	Name     string            ` + "`yaml:\"name\"`" + `
	Wait     time.Duration     ` + "`yaml:\"wait\"`" + `
	Items    []Item            ` + "`yaml:\"items\"`" + `
	Labels   map[string]string ` + "`yaml:\"labels\"`" + `
	Inner    ` + "`yaml:\",inline\"`" + `
	Custom   Custom            ` + "`yaml:\"custom\"`" + `
	Skipped  string            ` + "`yaml:\"-\"`" + `
	Plain    int
	hidden   int
}
type Inner struct{ Extra bool ` + "`yaml:\"extra\"`" + ` }
type Item struct{ ID string ` + "`yaml:\"id\"`" + `; Next *Item ` + "`yaml:\"next\"`" + ` }
type Custom struct{ v int }
func (c *Custom) UnmarshalYAML(*int) error { return nil }
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := newSchemaLoaderAt(dir).named(".", "Config")
	if err != nil || s == nil {
		t.Fatalf("schema: %v %v", s, err)
	}
	if got, want := s.keys(), []string{"custom", "extra", "items", "labels", "name", "plain", "wait"}; !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	doc := `
name: a
wait: 1s
labels: {free: form}
custom: {anything: [1, 2]}
extra: true
items:
  - id: x
    next: {id: y, next: {id: z, bogus: 1}}
  - idd: typo
skipped: no
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	got := s.check("", &n)
	want := []string{
		"items[0].next.next.bogus (line 9) is not a setting; known: id, next",
		"items[1].idd (line 10) is not a setting; known: id, next",
		"skipped (line 11) is not a setting; known: custom, extra, items, labels, name, plain, wait",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("check:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
