package descriptor

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/txscript"
	"github.com/coffer/coffer/internal/chain"
)

type nodeKind uint8

const (
	kPK nodeKind = iota
	kPKH
	kWPKH
	kSH
	kWSH
	kMulti
	kSortedMulti
	kTR
)

var kindNames = [...]string{"pk", "pkh", "wpkh", "sh", "wsh", "multi", "sortedmulti", "tr"}

// node is one script expression.
type node struct {
	kind nodeKind
	keys []*key // one key, or the multisig keys
	k    int    // multisig threshold
	sub  *node  // sh() and wsh()
}

type keyOrigin struct {
	fp   [4]byte
	path []uint32 // with the hardened bit set where marked
}

// key is one key expression: a hex public key, or an xpub with a path.
type key struct {
	origin *keyOrigin // nil when the descriptor gives none

	pub []byte // hex keys as written: 33, 65, or 32 (x-only) bytes

	xpub     *hdkeychain.ExtendedKey // standard xpub/tpub version bytes
	ver      *keyVersion             // the version the key was written with
	xpubFP   [4]byte                 // fingerprint of xpub, the origin when none is given
	steps    []uint32                // unhardened steps after xpub, before any /*
	multi    []uint32                // BIP 389 alternatives, nil when none
	multiAt  int                     // index in steps of the multipath step
	wildcard bool                    // ends in /*
	// branch is xpub derived along steps, computed once so that each index
	// costs one derivation. Nil while the key is multipath.
	branch *hdkeychain.ExtendedKey
}

// resolve derives and caches the branch key.
func (k *key) resolve() error {
	cur := k.xpub
	for _, s := range k.steps {
		next, err := cur.Derive(s)
		if err != nil {
			return errf(ErrIndex, "cannot derive step %d: %v", s, err)
		}
		cur = next
	}
	k.branch = cur
	return nil
}

func (k *key) clone() *key {
	c := *k
	c.steps = slices.Clone(k.steps)
	return &c
}

// withStep returns a copy with steps[i] = v, a single path and a fresh
// branch.
func (k *key) withStep(i int, v uint32) (*key, error) {
	c := k.clone()
	c.steps[i] = v
	c.multi, c.multiAt = nil, -1
	if err := c.resolve(); err != nil {
		return nil, err
	}
	return c, nil
}

// size is the length of the key as pushed in a script.
func (k *key) size() int {
	if k.xpub != nil {
		return 33
	}
	return len(k.pub)
}

// KeyOrigin is the BIP 32 origin of one key of a derived output, as PSBT
// inputs and outputs carry it (PSBT_IN_BIP32_DERIVATION and, for tr(), the
// taproot variant).
type KeyOrigin struct {
	// Fingerprint is the master key fingerprint, in serialization order.
	// Without origin info in the descriptor it is the fingerprint of the
	// given key itself, and Path starts from that key.
	Fingerprint [4]byte
	// Path is the full path from the master key: the origin path followed
	// by the steps after the key; hardened steps have bit 31 set.
	Path []uint32
	// PubKey is the derived key as used in the script: 33 bytes (65 for an
	// uncompressed hex key), or the 32-byte x-only internal key for tr().
	PubKey []byte
}

func (k *key) derive(index uint32) ([]byte, KeyOrigin, error) {
	var (
		ko  KeyOrigin
		pub []byte
		sfx []uint32
	)
	if k.xpub == nil {
		pub = k.pub
		if len(pub) == 32 {
			ko.Fingerprint = fingerprint(append([]byte{0x02}, pub...))
		} else {
			ko.Fingerprint = fingerprint(pub)
		}
	} else {
		child := k.branch
		if k.wildcard {
			var err error
			if child, err = child.Derive(index); err != nil {
				// hdkeychain fails for about 1 in 2^127 indexes.
				return nil, ko, errf(ErrIndex, "cannot derive index %d: %v", index, err)
			}
		}
		ec, err := child.ECPubKey()
		if err != nil {
			return nil, ko, errf(ErrIndex, "cannot derive index %d: %v", index, err)
		}
		pub = ec.SerializeCompressed()
		ko.Fingerprint = k.xpubFP
		sfx = k.steps
	}
	n := len(sfx) + boolInt(k.wildcard)
	if k.origin != nil {
		ko.Fingerprint = k.origin.fp
		n += len(k.origin.path)
		ko.Path = append(make([]uint32, 0, n), k.origin.path...)
	}
	ko.Path = append(ko.Path, sfx...)
	if k.wildcard {
		ko.Path = append(ko.Path, index)
	}
	if ko.Path == nil {
		ko.Path = []uint32{}
	}
	ko.PubKey = pub
	return pub, ko, nil
}

// Descriptor is a parsed output descriptor. Build one with Parse,
// FromExtendedKey, Pair or Expand.
type Descriptor struct {
	root   *node
	keys   []*key // every key, in descriptor order
	multiN int    // number of BIP 389 alternatives; 0 when none
	ranged bool
	text   string // canonical form with checksum
}

func newDescriptor(root *node, multiN int) *Descriptor {
	d := &Descriptor{root: root, multiN: multiN}
	var walk func(n *node)
	walk = func(n *node) {
		for _, k := range n.keys {
			d.keys = append(d.keys, k)
			d.ranged = d.ranged || k.wildcard
		}
		if n.sub != nil {
			walk(n.sub)
		}
	}
	walk(root)
	var b strings.Builder
	root.write(&b)
	body := b.String()
	sum, _ := Checksum(body) // the writer only emits charset characters
	d.text = body + "#" + sum
	return d
}

// String returns the canonical descriptor with its checksum: hardened steps
// written with h, hex in lowercase, keys as xpub/tpub.
func (d *Descriptor) String() string { return d.text }

// IsRange reports whether the descriptor has a /* step, i.e. describes one
// script per index rather than a single script.
func (d *Descriptor) IsRange() bool { return d.ranged }

// IsMultipath reports whether the descriptor has a /<a;b;…> step and so
// stands for several descriptors; split it with Expand or Pair.
func (d *Descriptor) IsMultipath() bool { return d.multiN > 0 }

// errEmpty guards against use of a zero Descriptor.
var errEmpty = errf(ErrSyntax, "empty descriptor; build one with Parse or FromExtendedKey")

// ScriptType returns the shape of the output script ("" for a zero
// Descriptor).
func (d *Descriptor) ScriptType() ScriptType {
	if d == nil || d.root == nil {
		return ""
	}
	switch d.root.kind {
	case kPK:
		return ScriptPK
	case kPKH:
		return ScriptPKH
	case kWPKH:
		return ScriptWPKH
	case kTR:
		return ScriptTR
	case kMulti, kSortedMulti:
		return ScriptMulti
	case kWSH:
		return ScriptWSH
	}
	switch d.root.sub.kind {
	case kWPKH:
		return ScriptSHWPKH
	case kWSH:
		return ScriptSHWSH
	}
	return ScriptSH
}

// Multisig returns the threshold and number of keys of a multi() or
// sortedmulti() descriptor, bare or inside sh(), wsh() or sh(wsh()).
func (d *Descriptor) Multisig() (threshold, keys int, ok bool) {
	if d == nil || d.root == nil {
		return 0, 0, false
	}
	n := d.root
	for n.sub != nil {
		n = n.sub
	}
	if n.kind != kMulti && n.kind != kSortedMulti {
		return 0, 0, false
	}
	return n.k, len(n.keys), true
}

// Expand splits a multipath descriptor into one descriptor per alternative,
// in order; other descriptors come back alone.
func (d *Descriptor) Expand() ([]*Descriptor, error) {
	if d == nil || d.root == nil {
		return nil, errEmpty
	}
	if d.multiN == 0 {
		return []*Descriptor{d}, nil
	}
	out := make([]*Descriptor, 0, d.multiN)
	for i := range d.multiN {
		root, err := d.root.mapKeys(func(k *key) (*key, error) {
			if k.multi == nil {
				return k, nil
			}
			return k.withStep(k.multiAt, k.multi[i])
		})
		if err != nil {
			return nil, err
		}
		out = append(out, newDescriptor(root, 0))
	}
	return out, nil
}

// Pair returns the receive and change descriptors of a wallet: a /<a;b>
// multipath descriptor is split in two (BIP 389: first receive, then
// change); a descriptor whose ranged keys all end in /0/* gets the /1/*
// sibling as change. Other forms fail with ErrUnsupported.
func Pair(d *Descriptor) (receive, change *Descriptor, err error) {
	switch {
	case d == nil || d.root == nil:
		return nil, nil, errEmpty
	case d.multiN == 2:
		ds, err := d.Expand()
		if err != nil {
			return nil, nil, err
		}
		return ds[0], ds[1], nil
	case d.multiN > 0:
		return nil, nil, errf(ErrUnsupported, "multipath descriptor has %d alternatives; a receive/change pair needs exactly two, like /<0;1>/*", d.multiN)
	case !d.ranged:
		return nil, nil, errf(ErrUnsupported, "descriptor has no /* step, so it has no receive and change branches")
	}
	for _, k := range d.keys {
		if k.wildcard && (len(k.steps) == 0 || k.steps[len(k.steps)-1] != 0) {
			return nil, nil, errf(ErrUnsupported, "cannot infer the change branch: ranged keys must end in /0/* (change is then /1/*) or /<0;1>/*")
		}
	}
	root, err := d.root.mapKeys(func(k *key) (*key, error) {
		if !k.wildcard {
			return k, nil
		}
		return k.withStep(len(k.steps)-1, 1)
	})
	if err != nil {
		return nil, nil, err
	}
	return d, newDescriptor(root, 0), nil
}

// mapKeys copies the tree with every key replaced by f(key).
func (n *node) mapKeys(f func(*key) (*key, error)) (*node, error) {
	c := *n
	c.keys = make([]*key, len(n.keys))
	for i, k := range n.keys {
		nk, err := f(k)
		if err != nil {
			return nil, err
		}
		c.keys[i] = nk
	}
	if n.sub != nil {
		sub, err := n.sub.mapKeys(f)
		if err != nil {
			return nil, err
		}
		c.sub = sub
	}
	return &c, nil
}

// Output is everything derived for one index: the script to watch and what
// a PSBT needs to spend it.
type Output struct {
	Index         uint32
	Script        []byte      // scriptPubKey
	RedeemScript  []byte      // the script inside sh(), else nil
	WitnessScript []byte      // the script inside wsh(), else nil
	InternalKey   []byte      // tr(): the 32-byte x-only internal key, else nil
	Keys          []KeyOrigin // one per key expression, in descriptor order
}

// Derive computes the output at index. Ranged descriptors take indexes 0 to
// 2^31-1; others only 0. Multipath descriptors must be split first.
func (d *Descriptor) Derive(index uint32) (*Output, error) {
	switch {
	case d == nil || d.root == nil:
		return nil, errEmpty
	case d.multiN > 0:
		return nil, errf(ErrUnsupported, "multipath descriptor stands for %d descriptors; split it with Expand or Pair first", d.multiN)
	case d.ranged && index >= hdkeychain.HardenedKeyStart:
		return nil, errf(ErrIndex, "index %d is out of range: /* derives unhardened children 0 to 2147483647", index)
	case !d.ranged && index != 0:
		return nil, errf(ErrIndex, "descriptor has no /* step, so only index 0 exists, not %d", index)
	}
	out := &Output{Index: index, Keys: make([]KeyOrigin, 0, len(d.keys))}
	script, err := d.root.build(index, out)
	if err != nil {
		return nil, err
	}
	out.Script = script
	return out, nil
}

// Script returns the output script (scriptPubKey) at index.
func (d *Descriptor) Script(index uint32) ([]byte, error) {
	out, err := d.Derive(index)
	if err != nil {
		return nil, err
	}
	return out.Script, nil
}

// Derivations returns the BIP 32 origin and derived public key of every key
// at index, in descriptor order, for PSBT derivation fields.
func (d *Descriptor) Derivations(index uint32) ([]KeyOrigin, error) {
	out, err := d.Derive(index)
	if err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// Address returns the address of the output at index on net. Bare pk() and
// multi() outputs have no address and fail with ErrUnsupported.
func (d *Descriptor) Address(index uint32, net *chain.Params) (string, error) {
	if net == nil {
		return "", errf(ErrNetwork, "no network given for the address")
	}
	for _, k := range d.keys {
		if k.ver != nil {
			if err := checkNet(k.ver, net); err != nil {
				return "", err
			}
		}
	}
	script, err := d.Script(index)
	if err != nil {
		return "", err
	}
	addr, ok := net.ScriptAddress(script)
	if !ok {
		return "", errf(ErrUnsupported, "%s() outputs have no address form", kindNames[d.root.kind])
	}
	return addr, nil
}

// build returns the script of n at index and records keys and inner
// scripts in out.
func (n *node) build(index uint32, out *Output) ([]byte, error) {
	switch n.kind {
	case kPK, kPKH, kWPKH:
		pub, ko, err := n.keys[0].derive(index)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, ko)
		switch n.kind {
		case kPK:
			return append(push(make([]byte, 0, len(pub)+2), pub), txscript.OP_CHECKSIG), nil
		case kPKH:
			s := append(make([]byte, 0, 25), txscript.OP_DUP, txscript.OP_HASH160)
			s = push(s, btcutil.Hash160(pub))
			return append(s, txscript.OP_EQUALVERIFY, txscript.OP_CHECKSIG), nil
		}
		return push(append(make([]byte, 0, 22), txscript.OP_0), btcutil.Hash160(pub)), nil

	case kTR:
		pub, ko, err := n.keys[0].derive(index)
		if err != nil {
			return nil, err
		}
		xonly := pub
		if len(pub) == 33 {
			xonly = pub[1:]
		}
		internal, err := schnorr.ParsePubKey(xonly)
		if err != nil {
			return nil, errf(ErrSyntax, "invalid taproot internal key: %v", err)
		}
		ko.PubKey = xonly
		out.Keys = append(out.Keys, ko)
		out.InternalKey = xonly
		// BIP 86: commit to an unspendable script path.
		outputKey := txscript.ComputeTaprootKeyNoScript(internal)
		return push(append(make([]byte, 0, 34), txscript.OP_1), schnorr.SerializePubKey(outputKey)), nil

	case kMulti, kSortedMulti:
		pubs := make([][]byte, len(n.keys))
		for i, k := range n.keys {
			pub, ko, err := k.derive(index)
			if err != nil {
				return nil, err
			}
			out.Keys = append(out.Keys, ko)
			pubs[i] = pub
		}
		if n.kind == kSortedMulti {
			// BIP 67: lexicographic order of the serialized keys.
			slices.SortFunc(pubs, bytes.Compare)
		}
		s := make([]byte, 0, n.multisigSize())
		s = pushSmallInt(s, n.k)
		for _, pub := range pubs {
			s = push(s, pub)
		}
		s = pushSmallInt(s, len(pubs))
		return append(s, txscript.OP_CHECKMULTISIG), nil

	case kSH:
		inner, err := n.sub.build(index, out)
		if err != nil {
			return nil, err
		}
		out.RedeemScript = inner
		s := append(make([]byte, 0, 23), txscript.OP_HASH160)
		s = push(s, btcutil.Hash160(inner))
		return append(s, txscript.OP_EQUAL), nil

	case kWSH:
		inner, err := n.sub.build(index, out)
		if err != nil {
			return nil, err
		}
		out.WitnessScript = inner
		h := sha256.Sum256(inner)
		return push(append(make([]byte, 0, 34), txscript.OP_0), h[:]), nil
	}
	return nil, errf(ErrUnsupported, "unknown expression")
}

// push appends a data push; everything pushed here is at most 65 bytes, so
// the length byte is the opcode.
func push(s, data []byte) []byte {
	return append(append(s, byte(len(data))), data...)
}

// pushSmallInt appends n as a minimal script number: OP_1…OP_16, or a
// one-byte push for 17 to 20.
func pushSmallInt(s []byte, n int) []byte {
	if n <= 16 {
		return append(s, byte(txscript.OP_1-1+n))
	}
	return append(s, 1, byte(n))
}

// multisigSize is the length of the multisig script.
func (n *node) multisigSize() int {
	size := 3 // threshold, key count, OP_CHECKMULTISIG
	if n.k > 16 {
		size++
	}
	if len(n.keys) > 16 {
		size++
	}
	for _, k := range n.keys {
		size += 1 + k.size()
	}
	return size
}

func (n *node) write(b *strings.Builder) {
	b.WriteString(kindNames[n.kind])
	b.WriteByte('(')
	switch n.kind {
	case kSH, kWSH:
		n.sub.write(b)
	case kMulti, kSortedMulti:
		b.WriteString(strconv.Itoa(n.k))
		for _, k := range n.keys {
			b.WriteByte(',')
			k.write(b)
		}
	default:
		n.keys[0].write(b)
	}
	b.WriteByte(')')
}

func writeStep(b *strings.Builder, v uint32) {
	if v >= hdkeychain.HardenedKeyStart {
		b.WriteString(strconv.FormatUint(uint64(v-hdkeychain.HardenedKeyStart), 10))
		b.WriteByte('h')
		return
	}
	b.WriteString(strconv.FormatUint(uint64(v), 10))
}

func (k *key) write(b *strings.Builder) {
	if k.origin != nil {
		b.WriteByte('[')
		b.WriteString(hex.EncodeToString(k.origin.fp[:]))
		for _, v := range k.origin.path {
			b.WriteByte('/')
			writeStep(b, v)
		}
		b.WriteByte(']')
	}
	if k.xpub == nil {
		b.WriteString(hex.EncodeToString(k.pub))
		return
	}
	b.WriteString(k.xpub.String())
	for i, v := range k.steps {
		b.WriteByte('/')
		if k.multi != nil && i == k.multiAt {
			b.WriteByte('<')
			for j, m := range k.multi {
				if j > 0 {
					b.WriteByte(';')
				}
				writeStep(b, m)
			}
			b.WriteByte('>')
			continue
		}
		writeStep(b, v)
	}
	if k.wildcard {
		b.WriteString("/*")
	}
}
