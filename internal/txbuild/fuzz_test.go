package txbuild_test

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/coffer/coffer/internal/txbuild"
)

// FuzzCheck feeds Check arbitrary signed data: it must return one of the
// package's errors or a transaction, never panic.
func FuzzCheck(f *testing.F) {
	r, ring := proposal(f, "wsh")
	b64, _ := r.Base64()
	signed := signPSBT(f, b64, ring, signOpts{})
	raw, _ := base64.StdEncoding.DecodeString(signed)
	f.Add([]byte(signed))
	f.Add(raw)
	f.Add([]byte(b64))
	f.Add([]byte{})
	sentinels := []error{txbuild.ErrBadPSBT, txbuild.ErrMismatch, txbuild.ErrNotSigned, txbuild.ErrBadSignature}
	f.Fuzz(func(t *testing.T, data []byte) {
		tx, err := r.Check(data)
		if err == nil {
			verifyTx(t, tx, resultPrevOuts(r))
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error wraps no sentinel: %v", err)
	})
}
