package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// Stored blobs are a format version byte, the 12-byte GCM nonce, and the
// AES-256-GCM ciphertext with its 16-byte tag.
const formatV1 byte = 1

const (
	nonceSize = 12
	tagSize   = 16
	dekSize   = 32
)

// ErrDecrypt means a stored secret or data key did not authenticate: the
// master key is not the one that wrapped it, or the row was altered.
var ErrDecrypt = errors.New("keys: cannot decrypt: wrong master key or altered row")

// Additional data domains, so a blob of one kind never opens as another.
const (
	adSecret = "coffer/keys/secret/v1"
	adDEK    = "coffer/keys/dek/v1"
)

// additionalData joins a domain and fields, each field length-prefixed so
// that no two field lists encode alike.
func additionalData(domain string, fields ...string) []byte {
	b := append([]byte(domain), 0)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext under key with a random nonce.
func seal(key, plaintext, ad []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+tagSize)
	out[0] = formatV1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("keys: reading random nonce: %w", err)
	}
	return aead.Seal(out, out[1:1+nonceSize], plaintext, ad), nil
}

// open decrypts a blob made by seal; any failure is ErrDecrypt.
func open(key, blob, ad []byte) ([]byte, error) {
	if len(blob) < 1+nonceSize+tagSize || blob[0] != formatV1 {
		return nil, ErrDecrypt
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func secretAD(owner, kind string) []byte { return additionalData(adSecret, owner, kind) }

func dekAD(owner, masterID string) []byte { return additionalData(adDEK, owner, masterID) }

// wrapDEK seals dek under master for owner.
func wrapDEK(master *MasterKey, owner string, dek []byte) ([]byte, error) {
	return seal(master.Key[:], dek, dekAD(owner, master.ID))
}

// unwrapDEK opens a wrapped DEK; the caller clears the result.
func unwrapDEK(master *MasterKey, owner string, wrapped []byte) ([]byte, error) {
	dek, err := open(master.Key[:], wrapped, dekAD(owner, master.ID))
	if err != nil {
		return nil, err
	}
	if len(dek) != dekSize {
		clear(dek)
		return nil, ErrDecrypt
	}
	return dek, nil
}
