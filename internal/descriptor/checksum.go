package descriptor

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The BIP 380 checksum: a BCH code over symbols derived from the descriptor
// characters, written in the bech32 alphabet.

// inputCharset orders the allowed characters in three groups of 32 so that
// case errors and the common "unprotected" characters cost one symbol each.
const inputCharset = "0123456789()[],'/*abcdefgh@:$%{}" +
	"IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~" +
	"ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "

const checksumCharset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

const checksumLen = 8

// charValue maps a byte to its position in inputCharset plus one; zero
// means the byte is not allowed.
var charValue = func() (t [256]uint8) {
	for i := 0; i < len(inputCharset); i++ {
		t[inputCharset[i]] = uint8(i + 1)
	}
	return t
}()

var generator = [5]uint64{0xf5dee51989, 0xa9fdca3312, 0x1bab10e32d, 0x3706b1677a, 0x644d626ffd}

// polymodStep feeds one 5-bit symbol into the running checksum state.
func polymodStep(c uint64, v uint64) uint64 {
	top := c >> 35
	c = (c&0x7ffffffff)<<5 ^ v
	for i := range generator {
		if (top>>i)&1 != 0 {
			c ^= generator[i]
		}
	}
	return c
}

// badChar returns the offset of the first byte outside the descriptor
// character set, or -1.
func badChar(s string) int {
	for i := 0; i < len(s); i++ {
		if charValue[s[i]] == 0 {
			return i
		}
	}
	return -1
}

// checksumState runs the expanded symbols of s through the polymod. Each
// character contributes its position within its group; after every three
// characters one extra symbol carries their three group numbers.
func checksumState(s string) uint64 {
	c := uint64(1)
	groups, n := uint64(0), 0
	for i := 0; i < len(s); i++ {
		v := uint64(charValue[s[i]] - 1)
		c = polymodStep(c, v&31)
		groups = groups*3 + v>>5
		n++
		if n == 3 {
			c = polymodStep(c, groups)
			groups, n = 0, 0
		}
	}
	if n > 0 {
		c = polymodStep(c, groups)
	}
	return c
}

// Checksum returns the 8-character BIP 380 checksum of a descriptor given
// without its "#checksum" suffix. It works on any string in the descriptor
// character set, so it can also check descriptor types this package does not
// parse.
func Checksum(desc string) (string, error) {
	if i := badChar(desc); i >= 0 {
		return "", errAt(ErrSyntax, i, "character %s is not allowed in a descriptor", quoteChar(desc, i))
	}
	c := checksumState(desc)
	for range checksumLen {
		c = polymodStep(c, 0)
	}
	c ^= 1
	var b strings.Builder
	for i := range checksumLen {
		b.WriteByte(checksumCharset[(c>>(5*(7-i)))&31])
	}
	return b.String(), nil
}

// splitChecksum separates and verifies an optional "#checksum" suffix and
// returns the descriptor body. It also rejects characters outside the
// descriptor character set, which the checksum could not cover.
func splitChecksum(s string) (string, error) {
	if i := badChar(s); i >= 0 {
		return "", errAt(ErrSyntax, i, "character %s is not allowed in a descriptor", quoteChar(s, i))
	}
	hash := strings.IndexByte(s, '#')
	if hash < 0 {
		return s, nil
	}
	body, sum := s[:hash], s[hash+1:]
	if j := strings.IndexByte(sum, '#'); j >= 0 {
		return "", errAt(ErrChecksum, hash+1+j, "more than one '#'")
	}
	if len(sum) != checksumLen {
		return "", errAt(ErrChecksum, hash, "checksum after '#' must be %d characters, found %d", checksumLen, len(sum))
	}
	// The state of body+checksum must come out as 1; no need to recompute
	// the expected string (and not showing it keeps typos from being
	// "fixed" by copying it).
	c := checksumState(body)
	for i := 0; i < len(sum); i++ {
		v := strings.IndexByte(checksumCharset, sum[i])
		if v < 0 {
			return "", errAt(ErrChecksum, hash+1+i, "checksum character %q is not in the checksum alphabet", rune(sum[i]))
		}
		c = polymodStep(c, uint64(v))
	}
	if c != 1 {
		return "", errAt(ErrChecksum, hash+1, "checksum %q does not match the descriptor; check it for typos", sum)
	}
	return body, nil
}

// quoteChar quotes the character starting at byte offset i, decoding UTF-8
// so that a pasted "Ü" is shown as such rather than as its first byte.
func quoteChar(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return strconv.QuoteRune(r)
}
