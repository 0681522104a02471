package api

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
	"github.com/coffer/coffer/internal/wallet"
)

type openAPIDocument struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// TestOpenAPIMatchesRoutes fails when a served route is undocumented or the
// document describes an operation the server does not serve.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc openAPIDocument
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi version %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(httpMethods, key) {
				documented[strings.ToUpper(key)+" "+path] = true
			}
		}
	}

	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	s := NewServer(Deps{DB: db, Events: events.NewLog(db)})
	served := map[string]bool{}
	for _, rt := range routes {
		// Ask the ServeMux itself, so a table entry that was never
		// registered (or registered under another pattern) shows up here.
		req := httptest.NewRequest(rt.method, rt.path, nil)
		if _, pattern := s.mux.Handler(req); pattern != rt.pattern() {
			t.Errorf("route %s: ServeMux matched %q", rt.pattern(), pattern)
		}
		served[rt.pattern()] = true
		if !documented[rt.pattern()] {
			t.Errorf("route %s is served but missing from openapi.json", rt.pattern())
		}
	}
	for _, op := range slices.Sorted(maps.Keys(documented)) {
		if !served[op] {
			t.Errorf("openapi.json documents %s, which the server does not serve", op)
		}
	}
}

// TestOpenAPIRefsResolve catches a misspelt $ref, which JSON parsing alone
// would not.
func TestOpenAPIRefsResolve(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if !resolves(doc, ref) {
					t.Errorf("$ref %q does not resolve", ref)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
}

func resolves(doc map[string]any, ref string) bool {
	path, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, part := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

func TestOpenAPIServed(t *testing.T) {
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	s := NewServer(Deps{DB: db, Events: events.NewLog(db)})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != string(openAPIDoc) {
		t.Fatalf("status %d, Content-Type %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
}

// TestOpenAPISecurity holds the document's security declarations against the
// route table: secured routes declare the scope they need and document 401
// and 403, public ones declare none, and x-wallet-token marks exactly the
// routes that accept a wallet token.
func TestOpenAPISecurity(t *testing.T) {
	doc := openAPISpec()
	if sec, ok := doc["security"].([]any); ok && len(sec) > 0 {
		t.Errorf("top-level security %v would also apply to the public routes", sec)
	}
	schemes, _ := deref(doc["components"])["securitySchemes"].(map[string]any)
	scopeOf := map[access]string{readAccess: "read", writeAccess: "write", adminAccess: "admin"}
	for _, rt := range routes {
		op := operation(rt.method, rt.path)
		if op == nil {
			continue // TestOpenAPIMatchesRoutes reports it
		}
		reqs, _ := op["security"].([]any)
		if rt.access == public {
			if len(reqs) > 0 {
				t.Errorf("%s is public but declares security %v", rt.pattern(), reqs)
			}
			continue
		}
		if len(reqs) == 0 {
			t.Errorf("%s needs a credential but declares no security", rt.pattern())
		}
		seen := map[string]bool{}
		for _, req := range reqs {
			m, _ := req.(map[string]any)
			for name, scopes := range m {
				seen[name] = true
				if schemes[name] == nil {
					t.Errorf("%s: security scheme %q is not in components.securitySchemes", rt.pattern(), name)
				}
				if got := brief(scopes); got != brief([]string{scopeOf[rt.access]}) {
					t.Errorf("%s: scheme %s lists scopes %s, the route needs %q", rt.pattern(), name, got, scopeOf[rt.access])
				}
			}
		}
		if !seen["bearer"] || !seen["apiKey"] {
			t.Errorf("%s: security %v should offer both bearer and apiKey", rt.pattern(), reqs)
		}
		responses, _ := op["responses"].(map[string]any)
		for _, status := range []string{"401", "403"} {
			if responses[status] == nil {
				t.Errorf("%s needs a credential but does not document %s", rt.pattern(), status)
			}
		}
		if got, _ := op["x-wallet-token"].(bool); got != rt.wallet {
			t.Errorf("%s: x-wallet-token is %v, the route table says wallet tokens are accepted: %v", rt.pattern(), got, rt.wallet)
		}
	}
}

// handlerFacts is what a route's handler visibly does, read from the
// package's source: the status constants it (or the package functions it
// calls) writes, whether it reads a JSON body, and the query and path
// parameters it reads.
type handlerFacts struct {
	readsBody bool
	statuses  map[int]bool
	query     map[string]bool
	path      map[string]bool
}

// packageFuncs parses the package's non-test files: functions by name,
// methods as "Server.name" whatever their receiver (handlers call methods
// only on the Server, as s.name).
func packageFuncs(t *testing.T) map[string]*ast.FuncDecl {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]*ast.FuncDecl{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				key := fd.Name.Name
				if fd.Recv != nil {
					key = "Server." + key
				}
				funcs[key] = fd
			}
		}
	}
	return funcs
}

// statusCodes maps net/http's constant names (StatusNotFound) to codes.
var statusCodes = sync.OnceValue(func() map[string]int {
	m := map[string]int{}
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			m["Status"+strings.NewReplacer(" ", "", "-", "").Replace(text)] = code
		}
	}
	return m
})

func facts(t *testing.T, funcs map[string]*ast.FuncDecl, rt route) handlerFacts {
	name := runtime.FuncForPC(reflect.ValueOf(rt.handle).Pointer()).Name()
	name = strings.TrimSuffix(name[strings.LastIndex(name, ".")+1:], "-fm")
	fd := funcs["Server."+name]
	if fd == nil {
		t.Fatalf("%s: no source for handler %s", rt.pattern(), name)
	}
	hf := handlerFacts{statuses: map[int]bool{}, query: map[string]bool{}, path: map[string]bool{}}
	visited := map[*ast.FuncDecl]bool{}
	var walk func(fd *ast.FuncDecl)
	walk = func(fd *ast.FuncDecl) {
		if visited[fd] {
			return
		}
		visited[fd] = true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if pkg, ok := n.X.(*ast.Ident); ok && pkg.Name == "http" && strings.HasPrefix(n.Sel.Name, "Status") {
					code, ok := statusCodes()[n.Sel.Name]
					if !ok {
						t.Errorf("%s: unknown status constant http.%s", rt.pattern(), n.Sel.Name)
					}
					hf.statuses[code] = true
				}
			case *ast.CallExpr:
				var callee *ast.FuncDecl
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					callee = funcs[fn.Name]
					hf.readsBody = hf.readsBody || fn.Name == "readJSON"
					if (fn.Name == "intParam" || fn.Name == "boolParam") && len(n.Args) > 1 {
						hf.query[stringLit(n.Args[1])] = true
					}
				case *ast.SelectorExpr:
					if recv, ok := fn.X.(*ast.Ident); ok && recv.Name == "s" {
						callee = funcs["Server."+fn.Sel.Name]
					}
					if len(n.Args) == 1 && fn.Sel.Name == "PathValue" {
						hf.path[stringLit(n.Args[0])] = true
					}
					if len(n.Args) == 1 && fn.Sel.Name == "Get" && readsQuery(fn.X) {
						hf.query[stringLit(n.Args[0])] = true
					}
				}
				// writeJSON's 500 is for a value that cannot be encoded: a
				// bug in the server, not an answer to document per route.
				if callee != nil && callee.Name.Name != "writeJSON" {
					walk(callee)
				}
			}
			return true
		})
	}
	walk(fd)
	return hf
}

func stringLit(e ast.Expr) string {
	if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
		if s, err := strconv.Unquote(lit.Value); err == nil {
			return s
		}
	}
	return "<non-literal>"
}

// readsQuery matches the receivers of query lookups: q and r.URL.Query().
func readsQuery(x ast.Expr) bool {
	if id, ok := x.(*ast.Ident); ok {
		return id.Name == "q"
	}
	call, ok := x.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Query"
}

// TestOpenAPIMatchesHandlers reads each handler's source and fails when the
// document leaves out (or invents) its request body, a status it writes, or
// a query or path parameter it reads.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	funcs := packageFuncs(t)
	wildcard := regexp.MustCompile(`\{([a-z_]+)\}`)
	for _, rt := range routes {
		op := operation(rt.method, rt.path)
		if op == nil {
			continue // TestOpenAPIMatchesRoutes reports it
		}
		hf := facts(t, funcs, rt)
		if _, documented := op["requestBody"]; documented != hf.readsBody {
			t.Errorf("%s: handler reads a JSON body: %v; openapi.json documents a requestBody: %v", rt.pattern(), hf.readsBody, documented)
		}
		if body := deref(op["requestBody"]); body != nil {
			content, _ := body["content"].(map[string]any)
			media, _ := content["application/json"].(map[string]any)
			if s := deref(media["schema"]); s == nil || s["additionalProperties"] != false {
				t.Errorf("%s: the request body schema must set additionalProperties: false (readJSON rejects unknown fields)", rt.pattern())
			}
		}
		responses, _ := op["responses"].(map[string]any)
		for _, code := range slices.Sorted(maps.Keys(hf.statuses)) {
			if responses[strconv.Itoa(code)] == nil {
				t.Errorf("%s: handler can answer %d, which openapi.json does not document", rt.pattern(), code)
			}
		}
		docParams := map[string]map[string]bool{"query": {}, "path": {}, "header": {}}
		params, _ := op["parameters"].([]any)
		for _, p := range params {
			p := deref(p)
			in, _ := p["in"].(string)
			name, _ := p["name"].(string)
			if docParams[in] == nil {
				t.Errorf("%s: parameter %q is in %q; only query, path and header are used", rt.pattern(), name, in)
				continue
			}
			docParams[in][name] = true
			if in == "path" && p["required"] != true {
				t.Errorf("%s: path parameter %q must be required", rt.pattern(), name)
			}
		}
		if got, want := docParams["header"][IdempotencyKeyHeader], rt.usesIdempotency(); got != want || len(docParams["header"]) > 1 {
			t.Errorf("%s: documented header parameters %v; the route honours Idempotency-Key: %v", rt.pattern(), slices.Sorted(maps.Keys(docParams["header"])), want)
		}
		wildcards := map[string]bool{}
		for _, m := range wildcard.FindAllStringSubmatch(rt.path, -1) {
			wildcards[m[1]] = true
		}
		if !maps.Equal(docParams["path"], wildcards) {
			t.Errorf("%s: documented path parameters %v, the pattern has %v", rt.pattern(), slices.Sorted(maps.Keys(docParams["path"])), slices.Sorted(maps.Keys(wildcards)))
		}
		for name := range hf.path {
			if !wildcards[name] {
				t.Errorf("%s: handler reads path value %q, which the pattern lacks", rt.pattern(), name)
			}
		}
		if !maps.Equal(docParams["query"], hf.query) {
			t.Errorf("%s: documented query parameters %v, the handler reads %v", rt.pattern(), slices.Sorted(maps.Keys(docParams["query"])), slices.Sorted(maps.Keys(hf.query)))
		}
	}
}

// TestOpenAPIDescribesResponses drives the server through the answers it
// gives without a node or a wallet service and holds each against the
// document with checkResponse.
func TestOpenAPIDescribesResponses(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, storetest.NewSQLiteDSN(t))
	log := events.NewLog(db)
	s := NewServer(Deps{DB: db, Events: log, Version: "test", Coin: "btc", Network: "regtest"})
	newKey := func(scope auth.Scope) (string, auth.APIKey) {
		key, k, err := auth.CreateAPIKey(ctx, db, scope, "test")
		if err != nil {
			t.Fatal(err)
		}
		return key, k
	}
	readKey, _ := newKey(auth.ScopeRead)
	adminKey, _ := newKey(auth.ScopeAdmin)
	revokedKey, revoked := newKey(auth.ScopeAdmin)
	if err := auth.RevokeAPIKey(ctx, db, revoked.ID); err != nil {
		t.Fatal(err)
	}
	err := db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := log.Append(ctx, tx, events.BlockConnected, "", map[string]any{"height": 1}); err != nil {
			return err
		}
		_, err := log.Append(ctx, tx, events.TxSeen, strings.Repeat("ab", 32), map[string]any{"txid": strings.Repeat("cd", 32)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// call serves one request and checks the answer against the document
	// and, when code is set, the error code.
	call := func(method, target, pattern, header, body string, status int, code string) {
		t.Helper()
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		if name, value, ok := strings.Cut(header, ": "); ok {
			req.Header.Set(name, value)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != status {
			t.Errorf("%s %s: status %d, want %d; body %s", method, target, rec.Code, status, rec.Body)
		}
		if pattern == "" {
			checkJSON(t, method+" "+target, map[string]any{"$ref": "#/components/schemas/Error"}, rec.Body.Bytes())
		} else {
			checkResponse(t, method, pattern, rec.Code, rec.Body.Bytes())
		}
		if code != "" {
			var e ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != code {
				t.Errorf("%s %s: body %s, want error code %q", method, target, rec.Body, code)
			}
		}
	}
	read, admin := "Authorization: Bearer "+readKey, "Authorization: Bearer "+adminKey
	call("GET", "/healthz", "/healthz", "", "", 200, "")
	call("GET", "/readyz", "/readyz", "", "", 503, "") // no node
	call("GET", "/openapi.json", "/openapi.json", "", "", 200, "")
	call("GET", "/metrics", "/metrics", "", "", 200, "")
	call("GET", "/v1/status", "/v1/status", read, "", 200, "")
	call("GET", "/v1/status", "/v1/status", "X-API-Key: "+readKey, "", 200, "")
	call("GET", "/v1/status", "/v1/status", "", "", 401, CodeUnauthenticated)
	call("GET", "/v1/status", "/v1/status", "Authorization: Bearer coffer_nope", "", 401, CodeUnauthenticated)
	call("GET", "/v1/status", "/v1/status", "Authorization: Bearer "+revokedKey, "", 401, "key_revoked")
	call("GET", "/v1/status", "/v1/status", "Authorization: Bearer cwt_unknown", "", 401, CodeUnauthenticated)
	call("GET", "/v1/events", "/v1/events", read, "", 200, "")
	call("GET", "/v1/events?after=1&limit=1", "/v1/events", read, "", 200, "")
	call("GET", "/v1/events?limit=0", "/v1/events", read, "", 400, CodeInvalidParameter)
	call("GET", "/v2/nothing", "", read, "", 404, CodeNotFound)
	call("PUT", "/v1/status", "", read, "", 405, CodeMethodNotAllowed)

	// Every route: 401 without a credential, 403 for a read key on a write
	// route, and 503 from the wallet routes with no wallet service.
	fill := strings.NewReplacer("{id}", strings.Repeat("ab", 32), "{pid}", "prop_"+strings.Repeat("0", 24), "{txid}", strings.Repeat("cd", 32))
	for _, rt := range routes {
		target := fill.Replace(rt.path)
		if rt.access != public {
			call(rt.method, target, rt.path, "", "{}", 401, CodeUnauthenticated)
		}
		if rt.access > readAccess {
			call(rt.method, target, rt.path, read, "{}", 403, CodeForbidden)
		}
		if strings.HasPrefix(rt.path, "/v1/wallets") || rt.path == "/v1/auth/token" {
			call(rt.method, target, rt.path, admin, "{}", 503, CodeUnavailable)
		}
	}
}

// recordingTB collects what checkResponse reports instead of failing.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestCheckResponse makes sure checkResponse catches what it is for.
func TestCheckResponse(t *testing.T) {
	tx := `"txid":"` + strings.Repeat("ab", 32) + `","status":"mempool","net":"-5","received":"0","sent":"5","confirmations":0,` +
		`"block_height":null,"block_hash":null,"block_time":null,"first_seen":"2024-05-01T12:00:00Z"`
	for _, c := range []struct {
		method, pattern string
		status          int
		body            string
		ok              bool
	}{
		{"GET", "/healthz", 200, `{"status":"ok"}`, true},
		{"GET", "/healthz", 200, `{"status":"ok","uptime":3}`, false},                // undocumented field
		{"GET", "/healthz", 200, `{"status":"fine"}`, false},                         // const
		{"GET", "/healthz", 200, `{}`, false},                                        // required
		{"GET", "/healthz", 418, `{"status":"ok"}`, false},                           // undocumented status
		{"GET", "/nowhere", 200, `{}`, false},                                        // undocumented operation
		{"GET", "/v1/events", 400, `{"error":{"code":"oops","message":"x"}}`, false}, // enum
		{"GET", "/v1/events", 200, `{"events":[{"id":1.5,"type":"x","data":{"any":1},"created_at":1}],"next_after":1}`, false},
		{"GET", "/v1/events", 200, `{"events":[{"id":1,"type":"x","data":{"any":1},"created_at":1}],"next_after":1}`, true},
		{"GET", "/v1/wallets/{id}/transactions/{txid}", 200, `{"fee":null,` + tx + `}`, true},
		{"GET", "/v1/wallets/{id}/transactions/{txid}", 200, `{"fee":"12",` + tx + `}`, true},
		{"GET", "/v1/wallets/{id}/transactions/{txid}", 200, `{"fee":12,` + tx + `}`, false},    // amount as a number
		{"GET", "/v1/wallets/{id}/transactions/{txid}", 200, `{"fee":"1.2",` + tx + `}`, false}, // pattern
		{"GET", "/v1/wallets/{id}/transactions/{txid}", 200, `{"fee":null,` + strings.Replace(tx, `"block_time":null`, `"block_time":"yesterday"`, 1) + `}`, false},
		{"GET", "/v1/wallets/{id}/utxos", 200, `{"utxos":[],"total":"0"}`, true},
		{"GET", "/v1/wallets/{id}/utxos", 200, `{"utxos":{},"total":"0"}`, false},
		{"GET", "/metrics", 200, "# HELP x\n", true}, // not JSON: not validated
	} {
		rec := &recordingTB{}
		checkResponse(rec, c.method, c.pattern, c.status, []byte(c.body))
		if ok := len(rec.errs) == 0; ok != c.ok {
			t.Errorf("checkResponse(%s %s %d %s): errors %q, want ok %v", c.method, c.pattern, c.status, c.body, rec.errs, c.ok)
		}
	}
}

// TestOpenAPISchemasMatchTypes compares each schema with the Go type the
// server encodes (or decodes) with it: the same field names, a field is
// required exactly when it is never omitted, and the kinds agree.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	responses := map[string]any{
		"Health": HealthResponse{}, "Ready": ReadyResponse{}, "Status": StatusResponse{}, "EventPage": EventsResponse{},
		"Error": ErrorResponse{}, "TokenResponse": TokenResponse{}, "Wallet": wallet.Wallet{}, "WalletList": WalletList{},
		"Address": wallet.Address{}, "AddressList": AddressList{}, "CheckAddressesResponse": CheckAddressesResponse{},
		"Balance": wallet.Balance{}, "UTXOList": UTXOList{}, "Tx": wallet.Tx{}, "TxPage": wallet.TxPage{}, "Proposal": wallet.Proposal{},
	}
	requests := map[string]any{
		"TokenRequest": TokenRequest{}, "RegisterWalletRequest": RegisterWalletRequest{}, "CheckAddressesRequest": CheckAddressesRequest{},
		"ProposalRequest": ProposalRequest{}, "SendProposalRequest": SendProposalRequest{},
	}
	for name, v := range responses {
		compareType(t, name, reflect.TypeOf(v), map[string]any{"$ref": "#/components/schemas/" + name}, true)
	}
	for name, v := range requests {
		compareType(t, name, reflect.TypeOf(v), map[string]any{"$ref": "#/components/schemas/" + name}, false)
	}
}

var marshalerType = reflect.TypeFor[json.Marshaler]()

func compareType(t *testing.T, at string, typ reflect.Type, schema any, response bool) {
	s := deref(schema)
	for alts, _ := s["anyOf"].([]any); len(alts) > 0; alts = alts[1:] { // the non-null branch of a nullable
		if alt := deref(alts[0]); alt["type"] != "null" {
			s = alt
			break
		}
	}
	if s == nil {
		t.Errorf("%s: no schema", at)
		return
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	kind := map[reflect.Kind]string{reflect.String: "string", reflect.Bool: "boolean", reflect.Float64: "number",
		reflect.Slice: "array", reflect.Struct: "object", reflect.Int: "integer", reflect.Int64: "integer", reflect.Uint32: "integer"}[typ.Kind()]
	if reflect.PointerTo(typ).Implements(marshalerType) {
		return // Amount, time.Time, json.RawMessage: their own JSON forms
	}
	if typ, ok := s["type"]; ok && !strings.Contains(brief(typ), `"`+kind+`"`) {
		t.Errorf("%s: schema type %v, Go kind %s", at, typ, kind)
	}
	switch typ.Kind() {
	case reflect.Slice:
		compareType(t, at+"[]", typ.Elem(), s["items"], response)
	case reflect.Struct:
		props, _ := s["properties"].(map[string]any)
		required, _ := s["required"].([]any)
		var names, always []string
		for f := range typ.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			names = append(names, name)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				always = append(always, name)
			}
			if props[name] != nil {
				compareType(t, at+"."+name, f.Type, props[name], response)
			}
		}
		if got := slices.Sorted(maps.Keys(props)); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
			t.Errorf("%s: schema properties %v, Go fields %v", at, got, slices.Sorted(slices.Values(names)))
		}
		var req []string
		for _, r := range required {
			req = append(req, r.(string))
		}
		if response && !slices.Equal(slices.Sorted(slices.Values(req)), slices.Sorted(slices.Values(always))) {
			t.Errorf("%s: schema requires %v, the server always sends %v", at, slices.Sorted(slices.Values(req)), slices.Sorted(slices.Values(always)))
		}
	}
}
