package descriptor

import (
	"strings"

	"github.com/coffer/coffer/internal/chain"
)

// FromExtendedKey builds the receive (…/0/*) and change (…/1/*) descriptors
// of an account-level extended public key.
//
// ypub/upub/Mtub keys mean sh(wpkh()), zpub/vpub keys mean wpkh(); for those
// scriptType may be empty, and must agree if given. xpub, tpub, Ltub and
// ttub keys need scriptType: pkh, sh-wpkh, wpkh or tr (see ParseScriptType).
// The key may carry origin info, "[d34db33f/84h/0h/0h]zpub…", which then
// shows up in the descriptors and in KeyOrigin fingerprints and paths. The
// key must belong to net; a nil net accepts any network.
func FromExtendedKey(key string, scriptType string, net *chain.Params) (receive, change *Descriptor, err error) {
	s := strings.TrimSpace(key)
	var origin string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, nil, errAt(ErrSyntax, 0, "key origin '[' is not closed with ']'")
		}
		if _, err := parseOrigin(s[1:end], 1); err != nil {
			return nil, nil, err
		}
		origin, s = s[:end+1], s[end+1:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return nil, nil, errAt(ErrSyntax, len(origin)+i,
			"give the account-level extended key without a derivation path; /0/* and /1/* are added")
	}
	ext, ver, err := decodeExtKey(s)
	if err != nil {
		return nil, nil, withPos(err, len(origin))
	}
	if err := checkNet(ver, net); err != nil {
		return nil, nil, err
	}
	if ver.multisig {
		return nil, nil, errf(ErrUnsupported, "%s is a multisig key; describe the wallet with a wsh(sortedmulti(…)) descriptor of xpub/tpub keys", ver.prefix)
	}
	st := ver.implied
	if strings.TrimSpace(scriptType) != "" || st == "" {
		want, err := ParseScriptType(scriptType)
		if err != nil {
			if st == "" && strings.TrimSpace(scriptType) == "" {
				return nil, nil, errf(ErrScriptType, "%s keys need a script type: pkh, sh-wpkh, wpkh or tr", ver.prefix)
			}
			return nil, nil, err
		}
		if st != "" && want != st {
			return nil, nil, errf(ErrScriptType, "%s keys are for %s outputs, not %s; to use %s, give the key as %s",
				ver.prefix, st, want, want, ext.String())
		}
		st = want
	}
	var wrap func(string) string
	switch st {
	case ScriptPKH:
		wrap = func(k string) string { return "pkh(" + k + ")" }
	case ScriptSHWPKH:
		wrap = func(k string) string { return "sh(wpkh(" + k + "))" }
	case ScriptWPKH:
		wrap = func(k string) string { return "wpkh(" + k + ")" }
	case ScriptTR:
		wrap = func(k string) string { return "tr(" + k + ")" }
	default:
		return nil, nil, errf(ErrScriptType, "script type %q cannot be built from one extended key", st)
	}
	base := origin + ext.String()
	if receive, err = Parse(wrap(base+"/0/*"), net); err != nil {
		return nil, nil, err
	}
	if change, err = Parse(wrap(base+"/1/*"), net); err != nil {
		return nil, nil, err
	}
	return receive, change, nil
}
