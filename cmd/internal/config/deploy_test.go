package config

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The reference config and the configuration guide must name every key the
// code knows, so neither can drift from defaults().

const (
	referenceConfig = "../../../deploy/roost.yaml"
	configGuide     = "../../../docs/configuration.md"
)

func sortedKeys() []string {
	var keys []string
	for k := range defaults() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestReferenceConfigLoads checks deploy/roost.yaml is valid and that the
// values it shows are the real defaults: loading it gives the same result
// as loading no file at all.
func TestReferenceConfigLoads(t *testing.T) {
	clearRoostEnv(t)
	got, err := Load(referenceConfig)
	if err != nil {
		t.Fatalf("deploy/roost.yaml does not load: %v", err)
	}
	want, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("deploy/roost.yaml shows values that are not the defaults:\n got  %+v\n want %+v", got, want)
	}
}

// TestReferenceConfigHasEveryKey walks the YAML tree: every key of
// defaults() must be written out in deploy/roost.yaml.
func TestReferenceConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(referenceConfig)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatalf("deploy/roost.yaml: %v", err)
	}
	for _, key := range sortedKeys() {
		if !hasPath(tree, strings.Split(key, ".")) {
			t.Errorf("deploy/roost.yaml lacks key %s: add it with its default and when to change it", key)
		}
	}
}

func hasPath(node map[string]any, path []string) bool {
	v, ok := node[path[0]]
	if !ok {
		return false
	}
	if len(path) == 1 {
		return true
	}
	child, ok := v.(map[string]any)
	return ok && hasPath(child, path[1:])
}

// TestConfigGuideHasEveryKey checks docs/configuration.md documents every
// key (written as `section.key`) and no key the code does not know.
func TestConfigGuideHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(configGuide)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	known := defaults()
	for _, key := range sortedKeys() {
		if !strings.Contains(doc, "`"+key+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", key)
		}
	}
	// Table rows start with | `key` |: each must be a real key.
	for _, line := range strings.Split(doc, "\n") {
		rest, ok := strings.CutPrefix(line, "| `")
		if !ok {
			continue
		}
		key, _, _ := strings.Cut(rest, "`")
		if _, ok := known[key]; !ok {
			t.Errorf("docs/configuration.md documents %q, which is not a config key", key)
		}
	}
}

// clearRoostEnv hides ROOST_* variables of the calling shell, which would
// otherwise override the file under test.
func clearRoostEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ROOST_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}
