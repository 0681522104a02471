package descriptor

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/coffer/coffer/internal/chain"
)

// maxDescriptorLen bounds input size; a 20-key wsh(sortedmulti()) with key
// origins is about 3,500 characters.
const maxDescriptorLen = 10000

// maxP2SHScript is the consensus limit on a P2SH redeem script push.
const maxP2SHScript = 520

// Parse parses an output descriptor: pkh(), wpkh(), sh(wpkh()), tr(KEY),
// pk(), multi() and sortedmulti() bare or inside sh(), wsh() or sh(wsh()).
// Keys are hex public keys or extended public keys with optional origin
// info, unhardened derivation steps, one /<a;b;…> multipath step (BIP 389)
// and a final /*. A "#checksum" suffix is optional and verified when
// present. Keys must belong to net; a nil net accepts any network but still
// rejects descriptors that mix mainnet and test network keys.
func Parse(s string, net *chain.Params) (*Descriptor, error) {
	trimmed := strings.TrimSpace(s)
	lead := strings.Index(s, trimmed)
	d, err := parse(trimmed, net)
	if err != nil {
		// Report positions in the caller's string, not the trimmed one.
		var e *Error
		if errors.As(err, &e) && e.Pos > 0 {
			e.Pos += lead
		}
		return nil, err
	}
	return d, nil
}

func parse(s string, net *chain.Params) (*Descriptor, error) {
	if s == "" {
		return nil, errf(ErrSyntax, "empty descriptor")
	}
	if len(s) > maxDescriptorLen {
		return nil, errf(ErrSyntax, "descriptor is %d characters long; the limit is %d", len(s), maxDescriptorLen)
	}
	body, err := splitChecksum(s)
	if err != nil {
		return nil, err
	}
	p := &parser{s: body, net: net}
	root, err := p.script(ctxTop)
	if err != nil {
		return nil, err
	}
	if p.pos < len(body) {
		return nil, errAt(ErrSyntax, p.pos, "unexpected %s after the end of the descriptor", quoteChar(body, p.pos))
	}
	return newDescriptor(root, p.multiN), nil
}

// context is where an expression sits, for the nesting rules of BIPs 381-386.
type context uint8

const (
	ctxTop context = iota
	ctxSH          // directly inside sh()
	ctxWSH         // inside wsh(), itself at the top or inside sh()
)

type parser struct {
	s      string
	pos    int
	net    *chain.Params
	class  netClass // network of the extended keys seen so far
	multiN int      // length of the multipath tuples seen so far
}

func (p *parser) peek(c byte) bool { return p.pos < len(p.s) && p.s[p.pos] == c }

func (p *parser) expect(c byte, what string) error {
	if p.peek(c) {
		p.pos++
		return nil
	}
	if p.pos >= len(p.s) {
		return errAt(ErrSyntax, p.pos, "expected %q %s, but the descriptor ends", rune(c), what)
	}
	return errAt(ErrSyntax, p.pos, "expected %q %s, found %s", rune(c), what, quoteChar(p.s, p.pos))
}

func (p *parser) ident() string {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			break
		}
		p.pos++
	}
	return p.s[start:p.pos]
}

func (p *parser) script(ctx context) (*node, error) {
	start := p.pos
	name := p.ident()
	if name == "" || !p.peek('(') {
		return nil, errAt(ErrSyntax, start, "expected a script expression such as wpkh(KEY)")
	}
	p.pos++
	n := &node{}
	switch name {
	case "pk", "pkh":
		n.kind = kPK
		if name == "pkh" {
			n.kind = kPKH
		}
		k, err := p.key(ctx == ctxWSH, false)
		if err != nil {
			return nil, err
		}
		n.keys = []*key{k}
	case "wpkh":
		if ctx == ctxWSH {
			return nil, errAt(ErrSyntax, start, "wpkh() cannot be used inside wsh()")
		}
		n.kind = kWPKH
		k, err := p.key(true, false)
		if err != nil {
			return nil, err
		}
		n.keys = []*key{k}
	case "sh":
		if ctx != ctxTop {
			return nil, errAt(ErrSyntax, start, "sh() can only be the outermost expression")
		}
		n.kind = kSH
		sub, err := p.script(ctxSH)
		if err != nil {
			return nil, err
		}
		n.sub = sub
	case "wsh":
		if ctx == ctxWSH {
			return nil, errAt(ErrSyntax, start, "wsh() can only be used at the top level or inside sh()")
		}
		n.kind = kWSH
		sub, err := p.script(ctxWSH)
		if err != nil {
			return nil, err
		}
		n.sub = sub
	case "multi", "sortedmulti":
		n.kind = kMulti
		if name == "sortedmulti" {
			n.kind = kSortedMulti
		}
		if err := p.multisig(n, ctx, start); err != nil {
			return nil, err
		}
		return n, nil // multisig consumed the ')'
	case "tr":
		if ctx != ctxTop {
			return nil, errAt(ErrSyntax, start, "tr() can only be the outermost expression")
		}
		n.kind = kTR
		k, err := p.key(true, true)
		if err != nil {
			return nil, err
		}
		n.keys = []*key{k}
		if p.peek(',') {
			return nil, errAt(ErrUnsupported, p.pos, "tr() with a script tree is not supported; only key-path tr(KEY) (BIP 86) is")
		}
	case "combo", "raw", "addr", "rawtr", "musig":
		return nil, errAt(ErrUnsupported, start, "%s() descriptors are not supported (supported: pkh, wpkh, sh(wpkh), tr, pk, multi, sortedmulti, sh, wsh)", name)
	default:
		if len(name) > 16 { // keep pasted key material out of messages
			name = name[:16] + "…"
		}
		return nil, errAt(ErrSyntax, start, "unknown script expression %q (supported: pkh, wpkh, sh(wpkh), tr, pk, multi, sortedmulti, sh, wsh)", name)
	}
	if err := p.expect(')', "to close "+name+"("); err != nil {
		return nil, err
	}
	return n, nil
}

// multisig parses "k,KEY,…,KEY)" and checks the BIP 383 limits for where
// the expression sits.
func (p *parser) multisig(n *node, ctx context, start int) error {
	numAt := p.pos
	for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
		p.pos++
	}
	if numAt == p.pos {
		return errAt(ErrSyntax, numAt, "multisig threshold must be a number, as in multi(2,KEY,KEY,KEY)")
	}
	num := p.s[numAt:p.pos]
	k, err := strconv.Atoi(num)
	if err != nil {
		k = -1 // out of range; reported below with the key count
	}
	for {
		if err := p.expect(',', "before a multisig key"); err != nil {
			return err
		}
		key, err := p.key(ctx == ctxWSH, false)
		if err != nil {
			return err
		}
		n.keys = append(n.keys, key)
		if len(n.keys) > 20 {
			return errAt(ErrSyntax, start, "multisig can have at most 20 keys")
		}
		if p.peek(')') {
			p.pos++
			break
		}
	}
	nk := len(n.keys)
	if k < 1 || k > nk {
		return errAt(ErrSyntax, numAt, "multisig threshold %.12s must be between 1 and the number of keys (%d)", num, nk)
	}
	n.k = k
	switch ctx {
	case ctxTop:
		if nk > 3 {
			return errAt(ErrSyntax, start, "bare multisig can have at most 3 keys, found %d; use wsh()", nk)
		}
	case ctxSH:
		if size := n.multisigSize(); size > maxP2SHScript {
			return errAt(ErrSyntax, start, "P2SH multisig script would be %d bytes, over the %d-byte limit; use wsh()", size, maxP2SHScript)
		}
	}
	return nil
}

// key reads one key expression, up to the next ',' or ')'.
func (p *parser) key(compressedOnly, tr bool) (*key, error) {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c == ',' || c == ')' {
			break
		}
		if c == '(' {
			return nil, errAt(ErrSyntax, start, "expected a key, found a script expression")
		}
		p.pos++
	}
	tok := p.s[start:p.pos]
	if tok == "" {
		return nil, errAt(ErrSyntax, start, "expected a key")
	}
	k, err := p.parseKey(tok, start, compressedOnly, tr)
	if err != nil {
		return nil, err
	}
	if k.multi != nil {
		if p.multiN != 0 && p.multiN != len(k.multi) {
			return nil, errAt(ErrSyntax, start, "multipath steps must all have the same number of values (found %d and %d)", p.multiN, len(k.multi))
		}
		p.multiN = len(k.multi)
	}
	return k, nil
}

// withPos adds a position to an error that has none.
func withPos(err error, off int) error {
	var e *Error
	if errors.As(err, &e) && e.Pos == 0 {
		e.Pos = off + 1
	}
	return err
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// parseKey parses a key expression found at offset off.
func (p *parser) parseKey(tok string, off int, compressedOnly, tr bool) (*key, error) {
	k := &key{multiAt: -1}
	rest, restOff := tok, off
	if strings.HasPrefix(tok, "[") {
		end := strings.IndexByte(tok, ']')
		if end < 0 {
			return nil, errAt(ErrSyntax, off, "key origin '[' is not closed with ']'")
		}
		o, err := parseOrigin(tok[1:end], off+1)
		if err != nil {
			return nil, err
		}
		k.origin = o
		rest, restOff = tok[end+1:], off+end+1
	}
	if i := strings.IndexAny(rest, "[]"); i >= 0 {
		return nil, errAt(ErrSyntax, restOff+i, "unexpected %q: a key has at most one origin, at its start", rune(rest[i]))
	}
	parts := strings.Split(rest, "/")
	keyStr := parts[0]
	if keyStr == "" {
		return nil, errAt(ErrSyntax, restOff, "expected a public key or xpub")
	}
	if isHex(keyStr) {
		if len(parts) > 1 {
			return nil, errAt(ErrSyntax, restOff+len(keyStr), "only extended keys (xpub/tpub) can be followed by a derivation path")
		}
		pub, err := parseHexKey(keyStr, compressedOnly, tr)
		if err != nil {
			return nil, withPos(err, restOff)
		}
		k.pub = pub
		return k, nil
	}

	ext, ver, err := decodeExtKey(keyStr)
	if err != nil {
		return nil, withPos(err, restOff)
	}
	if ver.slip132() {
		return nil, errAt(ErrUnsupported, restOff, "%s keys stand for a script type and are not used inside descriptors; write this key as %s",
			ver.prefix, ext.String())
	}
	if err := checkNet(ver, p.net); err != nil {
		return nil, withPos(err, restOff)
	}
	if p.class != 0 && p.class != ver.class {
		return nil, errAt(ErrNetwork, restOff, "descriptor mixes mainnet and test network keys")
	}
	p.class = ver.class
	k.xpub, k.ver = ext, ver

	stepOff := restOff + len(keyStr)
	for i, part := range parts[1:] {
		last := i == len(parts)-2
		at := stepOff + 1 // skip the '/'
		stepOff += 1 + len(part)
		switch {
		case part == "":
			return nil, errAt(ErrSyntax, at, "empty derivation step (stray '/')")
		case part == "*":
			if !last {
				return nil, errAt(ErrSyntax, at, "'*' must be the last derivation step")
			}
			k.wildcard = true
		case part == "*h" || part == "*'":
			return nil, errAt(ErrUnsupported, at, "hardened wildcard /%s needs the private key; Coffer is watch-only, use /*", part)
		case part[0] == '<':
			if k.multi != nil {
				return nil, errAt(ErrSyntax, at, "only one <…> multipath step is allowed per key")
			}
			vals, err := parseMultipath(part, at)
			if err != nil {
				return nil, err
			}
			k.multi, k.multiAt = vals, len(k.steps)
			k.steps = append(k.steps, vals[0])
		default:
			v, hardened, err := parseNum(part, at)
			if err != nil {
				return nil, err
			}
			if hardened {
				return nil, errAt(ErrUnsupported, at, "hardened step %s after an xpub needs the private key; Coffer is watch-only: "+
					"give the xpub at that path instead, with the path in the key origin [fingerprint/…]", part)
			}
			k.steps = append(k.steps, v)
		}
	}
	if depth := int(ext.Depth()) + len(k.steps) + boolInt(k.wildcard); depth > 255 {
		return nil, errAt(ErrSyntax, restOff, "derivation path is too deep (%d levels; BIP 32 allows 255)", depth)
	}
	pub, err := ext.ECPubKey()
	if err != nil {
		return nil, errAt(ErrSyntax, restOff, "invalid extended key: %v", err)
	}
	k.xpubFP = fingerprint(pub.SerializeCompressed())
	if k.multi == nil {
		if err := k.resolve(); err != nil {
			return nil, withPos(err, restOff)
		}
	}
	return k, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseHexKey checks a hex public key against where it is used: wpkh(),
// wsh() and tr() need compressed keys, and only tr() takes 64-character
// x-only keys.
func parseHexKey(s string, compressedOnly, tr bool) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errf(ErrSyntax, "invalid hex public key")
	}
	switch len(b) {
	case 33:
		if b[0] != 0x02 && b[0] != 0x03 {
			return nil, errf(ErrSyntax, "compressed public key must start with 02 or 03")
		}
	case 65:
		if b[0] != 0x04 {
			return nil, errf(ErrSyntax, "uncompressed public key must start with 04")
		}
		if compressedOnly || tr {
			return nil, errf(ErrSyntax, "uncompressed public keys are not allowed in wpkh(), wsh() or tr()")
		}
	case 32:
		if !tr {
			return nil, errf(ErrSyntax, "64-character x-only public keys are only allowed in tr()")
		}
		if _, err := schnorr.ParsePubKey(b); err != nil {
			return nil, errf(ErrSyntax, "invalid x-only public key: %v", err)
		}
		return b, nil
	default:
		return nil, errf(ErrSyntax, "hex public key must be 66 characters (compressed) or 130 (uncompressed), found %d", len(s))
	}
	if _, err := btcec.ParsePubKey(b); err != nil {
		return nil, errf(ErrSyntax, "invalid public key: %v", err)
	}
	return b, nil
}

// parseOrigin parses the inside of "[fingerprint/path]" found at offset off.
func parseOrigin(s string, off int) (*keyOrigin, error) {
	parts := strings.Split(s, "/")
	if len(parts[0]) != 8 || !isHex(parts[0]) {
		return nil, errAt(ErrSyntax, off, "key origin must start with an 8-character hex fingerprint")
	}
	o := &keyOrigin{}
	if _, err := hex.Decode(o.fp[:], []byte(parts[0])); err != nil {
		return nil, errAt(ErrSyntax, off, "key origin must start with an 8-character hex fingerprint")
	}
	at := off + len(parts[0])
	for _, part := range parts[1:] {
		at++
		v, err := parseStep(part, at)
		if err != nil {
			return nil, err
		}
		o.path = append(o.path, v)
		at += len(part)
	}
	return o, nil
}

// parseStep parses NUM, NUMh or NUM' in the key origin; after an xpub,
// hardened steps are refused.
func parseStep(s string, at int) (uint32, error) {
	v, hardened, err := parseNum(s, at)
	if err != nil {
		return 0, err
	}
	if hardened {
		return v + hdkeychain.HardenedKeyStart, nil
	}
	return v, nil
}

func parseNum(s string, at int) (uint32, bool, error) {
	hardened := false
	if n := len(s); n > 0 && (s[n-1] == 'h' || s[n-1] == '\'') {
		hardened, s = true, s[:n-1]
	} else if n > 0 && s[n-1] == 'H' {
		return 0, false, errAt(ErrSyntax, at, "mark hardened steps with h or ', not H")
	}
	if s == "" || len(s) > 10 {
		return 0, false, errAt(ErrSyntax, at, "invalid derivation step; want a number, optionally followed by h")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false, errAt(ErrSyntax, at, "invalid derivation step; want a number, optionally followed by h")
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v >= hdkeychain.HardenedKeyStart {
		return 0, false, errAt(ErrSyntax, at, "derivation index %s is out of range (0 to 2147483647)", s)
	}
	return uint32(v), hardened, nil
}

// parseMultipath parses "<a;b;…>" (BIP 389) after an xpub.
func parseMultipath(s string, at int) ([]uint32, error) {
	if len(s) < 2 || s[len(s)-1] != '>' {
		return nil, errAt(ErrSyntax, at, "multipath step '<' is not closed with '>'")
	}
	items := strings.Split(s[1:len(s)-1], ";")
	if len(items) < 2 {
		return nil, errAt(ErrSyntax, at, "a multipath step needs at least two values, like <0;1>")
	}
	vals := make([]uint32, 0, len(items))
	pos := at + 1
	for _, it := range items {
		v, hardened, err := parseNum(it, pos)
		if err != nil {
			return nil, err
		}
		if hardened {
			return nil, errAt(ErrUnsupported, pos, "hardened step %s after an xpub needs the private key; Coffer is watch-only", it)
		}
		for _, seen := range vals {
			if seen == v {
				return nil, errAt(ErrSyntax, pos, "multipath value %d appears twice", v)
			}
		}
		vals = append(vals, v)
		pos += len(it) + 1
	}
	return vals, nil
}
