package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A small validator for the subset of JSON Schema openapi.json uses, so tests
// can hold real responses against the document. Objects are closed by
// default: a field missing from properties fails unless additionalProperties
// allows it, so an undocumented response field is caught.

var openAPISpec = sync.OnceValue(func() map[string]any {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		panic("openapi.json: " + err.Error())
	}
	return doc
})

// deref follows $ref (siblings of a $ref, such as description, are ignored).
func deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	for i := 0; m != nil && i < 16; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = openAPISpec()
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			p, _ := cur.(map[string]any)
			cur = p[part]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// operation is the document's operation for a route, or nil.
func operation(method, pattern string) map[string]any {
	paths, _ := openAPISpec()["paths"].(map[string]any)
	item, _ := paths[pattern].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return op
}

// checkResponse fails t unless status is a documented response of the route
// (method and ServeMux path pattern, e.g. "GET", "/v1/wallets/{id}") and a
// JSON body matches the documented schema.
func checkResponse(t testing.TB, method, pattern string, status int, body []byte) {
	t.Helper()
	what := fmt.Sprintf("%s %s → %d", method, pattern, status)
	op := operation(method, pattern)
	if op == nil {
		t.Errorf("%s: openapi.json does not document the operation", what)
		return
	}
	responses, _ := op["responses"].(map[string]any)
	resp := deref(responses[strconv.Itoa(status)])
	if resp == nil {
		t.Errorf("%s: status %d is not documented; body %s", what, status, body)
		return
	}
	content, _ := resp["content"].(map[string]any)
	media, ok := content["application/json"].(map[string]any)
	if !ok {
		if len(content) == 0 && len(body) > 0 {
			t.Errorf("%s: the response documents no body, got %s", what, body)
		}
		return // not JSON (Prometheus text): nothing to validate
	}
	checkJSON(t, what, media["schema"], body)
}

// checkJSON fails t unless body is one JSON value matching schema.
func checkJSON(t testing.TB, what string, schema any, body []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Errorf("%s: body is not JSON (%v): %s", what, err, body)
		return
	}
	for _, e := range validate(schema, v, "$") {
		t.Errorf("%s: %s; body %s", what, e, body)
	}
}

// validate returns every place where v breaks schema.
func validate(schema, v any, at string) (errs []string) {
	s := deref(schema)
	if s == nil {
		return []string{at + ": schema does not resolve"}
	}
	fail := func(format string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(format, args...)) }
	if alts, ok := s["anyOf"].([]any); ok && !slices.ContainsFunc(alts, func(a any) bool { return validate(a, v, at) == nil }) {
		fail("%s matches none of anyOf", brief(v))
	}
	if alts, ok := s["oneOf"].([]any); ok {
		if n := len(slices.DeleteFunc(slices.Clone(alts), func(a any) bool { return validate(a, v, at) != nil })); n != 1 {
			fail("%s matches %d of oneOf, want 1", brief(v), n)
		}
	}
	if typ, ok := s["type"]; ok && !hasType(typ, v) {
		fail("%s is not of type %v", brief(v), typ)
		return errs
	}
	if c, ok := s["const"]; ok && !sameJSON(c, v) {
		fail("%s is not %s", brief(v), brief(c))
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return sameJSON(e, v) }) {
		fail("%s is not one of %s", brief(v), brief(enum))
	}
	switch v := v.(type) {
	case string:
		if p, ok := s["pattern"].(string); ok {
			if re, err := regexp.Compile(p); err != nil || !re.MatchString(v) {
				fail("%q does not match pattern %q (%v)", v, p, err)
			}
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				fail("%q is not a date-time", v)
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, e := range v {
				errs = append(errs, validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		required, _ := s["required"].([]any)
		for _, r := range required {
			if _, ok := v[r.(string)]; !ok {
				fail("required field %q is missing", r)
			}
		}
		closed := props != nil || s["type"] == "object"
		for _, k := range slices.Sorted(maps.Keys(v)) {
			sub, documented := props[k]
			switch extra := s["additionalProperties"]; {
			case documented:
				errs = append(errs, validate(sub, v[k], at+"."+k)...)
			case extra == true || (extra == nil && !closed):
			case extra == nil || extra == false:
				fail("field %q is not documented", k)
			default:
				errs = append(errs, validate(extra, v[k], at+"."+k)...)
			}
		}
	}
	return errs
}

func hasType(typ, v any) bool {
	names, ok := typ.([]any)
	if !ok {
		names = []any{typ}
	}
	for _, name := range names {
		var match bool
		switch name {
		case "object":
			_, match = v.(map[string]any)
		case "array":
			_, match = v.([]any)
		case "string":
			_, match = v.(string)
		case "boolean":
			_, match = v.(bool)
		case "null":
			match = v == nil
		case "number":
			_, match = v.(json.Number)
		case "integer":
			n, isNum := v.(json.Number)
			match = isNum && !strings.ContainsAny(string(n), ".eE")
		}
		if match {
			return true
		}
	}
	return false
}

func sameJSON(a, b any) bool { return brief(a) == brief(b) }

func brief(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
