package amount

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func TestJSON(t *testing.T) {
	b, err := json.Marshal(struct{ A Amount }{150000})
	if err != nil || string(b) != `{"A":"150000"}` {
		t.Fatalf("marshal = %s, %v", b, err)
	}
	var v struct{ A Amount }
	if err := json.Unmarshal([]byte(`{"A":"-42"}`), &v); err != nil || v.A != -42 {
		t.Fatalf("unmarshal = %v, %v", v.A, err)
	}
	for _, bad := range []string{`1.5`, `150000`, `"1.5"`, `"1e8"`, `""`, `"99999999999999999999"`, `" 1"`, `"0x10"`} {
		if err := json.Unmarshal([]byte(`{"A":`+bad+`}`), &v); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestChecked(t *testing.T) {
	if _, err := Add(math.MaxInt64, 1); !errors.Is(err, ErrOverflow) {
		t.Error("MaxInt64+1 did not overflow")
	}
	if _, err := Sub(math.MinInt64, 1); !errors.Is(err, ErrOverflow) {
		t.Error("MinInt64-1 did not overflow")
	}
	if v, err := Add(2, -3); err != nil || v != -1 {
		t.Errorf("2+-3 = %v, %v", v, err)
	}
	if v, err := Sub(-1, math.MaxInt64); err != nil || v != math.MinInt64 {
		t.Errorf("sub = %v, %v", v, err)
	}
	if _, err := Sub(-2, math.MaxInt64); !errors.Is(err, ErrOverflow) {
		t.Error("-2-MaxInt64 did not overflow")
	}
}
