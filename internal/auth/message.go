package auth

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/coffer/coffer/internal/chain"
)

// Signed messages in the format of Bitcoin Core's signmessage and
// verifymessage (and BIP137 for the segwit header bytes).
//
// The signed hash is SHA256(SHA256(varstr(magic) || varstr(message))), where
// varstr is a CompactSize length followed by the bytes and magic is
// "Bitcoin Signed Message:\n" for BTC or "Litecoin Signed Message:\n" for LTC.
//
// A signature is 65 bytes, base64 (standard alphabet, padded): a header byte
// then R and S, 32 bytes each, big-endian. The header is 27 + recovery id
// (0–3) plus an offset naming the key and address type it was made for:
//
//	27–30  uncompressed key, P2PKH
//	31–34  compressed key, P2PKH
//	35–38  compressed key, P2SH-P2WPKH (BIP137)
//	39–42  compressed key, P2WPKH (BIP137)
const (
	bitcoinMessageMagic  = "Bitcoin Signed Message:\n"
	litecoinMessageMagic = "Litecoin Signed Message:\n"

	compactSigLen = 65
	// maxSigText bounds the base64 text decoded: 65 bytes are 88 characters.
	maxSigText = 100
)

// messageMagic returns the signed-message prefix of the coin of params.
func messageMagic(params *chain.Params) (string, error) {
	if params == nil {
		return "", fmt.Errorf("auth: no chain parameters")
	}
	switch params.Coin {
	case chain.BTC:
		return bitcoinMessageMagic, nil
	case chain.LTC:
		return litecoinMessageMagic, nil
	}
	return "", fmt.Errorf("auth: no signed-message format for coin %q", params.Coin)
}

// messageHash is the double-SHA256 a signed message commits to.
func messageHash(magic, message string) []byte {
	var buf bytes.Buffer
	// Writes to a bytes.Buffer cannot fail.
	_ = wire.WriteVarString(&buf, 0, magic)
	_ = wire.WriteVarString(&buf, 0, message)
	return chainhash.DoubleHashB(buf.Bytes())
}

// VerifySignedMessage checks sigBase64, a signed-message signature over
// message for the coin of params, and returns the public key it recovers.
// Every valid signature recovers some key: the caller must check that the key
// is one it accepts. Failures wrap ErrBadSignature, except unsupported params.
func VerifySignedMessage(params *chain.Params, message string, sigBase64 string) (*btcec.PublicKey, error) {
	magic, err := messageMagic(params)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(sigBase64)
	if len(text) > maxSigText {
		return nil, wrap(ErrBadSignature, "signature is too long")
	}
	sig, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, wrap(ErrBadSignature, "signature is not base64")
	}
	if len(sig) != compactSigLen {
		return nil, wrap(ErrBadSignature, "signature has %d bytes, want %d", len(sig), compactSigLen)
	}
	h := sig[0]
	if h < 27 || h > 42 {
		return nil, wrap(ErrBadSignature, "signature header byte %d is not in 27–42", h)
	}
	// RecoverCompact knows the two P2PKH ranges only; the BIP137 segwit
	// headers also mean a compressed key, so map them onto 31–34.
	recID := (h - 27) & 3
	norm := 27 + recID
	if h >= 31 {
		norm += 4
	}
	fixed := make([]byte, compactSigLen)
	copy(fixed, sig)
	fixed[0] = norm
	pub, _, err := ecdsa.RecoverCompact(fixed, messageHash(magic, message))
	if err != nil {
		return nil, wrap(ErrBadSignature, "signature does not verify: %v", err)
	}
	return pub, nil
}

// SignMessage signs message with priv in the signed-message format of the
// coin of params, as Bitcoin Core's signmessagewithprivkey does for a
// compressed key (header 31–34, P2PKH), and returns the base64 signature.
// Signing is deterministic (RFC 6979). It returns "" when priv is nil or
// params is nil or names an unsupported coin.
func SignMessage(params *chain.Params, priv *btcec.PrivateKey, message string) string {
	magic, err := messageMagic(params)
	if err != nil || priv == nil {
		return ""
	}
	sig, err := ecdsa.SignCompact(priv, messageHash(magic, message), true)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(sig)
}
