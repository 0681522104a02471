package descriptor

import (
	"strings"
	"testing"
)

// BIP 380 "Test Vectors": checksum and character set.
func TestChecksumBIP380(t *testing.T) {
	sum, err := Checksum("raw(deadbeef)")
	if err != nil || sum != "89f8spxm" {
		t.Fatalf("Checksum(raw(deadbeef)) = %q, %v; want 89f8spxm", sum, err)
	}

	valid := []string{
		"raw(deadbeef)#89f8spxm", // valid checksum
		"raw(deadbeef)",          // no checksum
	}
	for _, s := range valid {
		body, err := splitChecksum(s)
		if err != nil || body != "raw(deadbeef)" {
			t.Errorf("splitChecksum(%q) = %q, %v", s, body, err)
		}
		// The checksum passes; raw() itself is outside this package's scope.
		_, err = Parse(s, nil)
		wantErr(t, err, ErrUnsupported, s)
	}

	invalid := []struct {
		s    string
		kind error
	}{
		{"raw(deadbeef)#", ErrChecksum},             // missing checksum
		{"raw(deadbeef)#89f8spxmx", ErrChecksum},    // too long
		{"raw(deadbeef)#89f8spx", ErrChecksum},      // too short
		{"raw(deedbeef)#89f8spxm", ErrChecksum},     // error in payload
		{"raw(deedbeef)##9f8spxm", ErrChecksum},     // error in checksum
		{"raw(Ü)#00000000", ErrSyntax},              // invalid character in payload
		{"raw(deadbeef)#89f8spxM", ErrChecksum},     // checksum case matters
		{"raw(deadbeef)#89f8#pxm", ErrChecksum},     // two '#'
		{"wpkh(03a34b99f22c)\n#x", ErrSyntax},       // control character
		{"raw(deadbeef)#89f8spxm ", ErrUnsupported}, // surrounding space is trimmed
	}
	for _, c := range invalid {
		_, err := Parse(c.s, nil)
		wantErr(t, err, c.kind, c.s)
	}
	_, err = Parse("raw(Ü)#00000000", nil)
	if !strings.Contains(err.Error(), "'Ü'") || !strings.Contains(err.Error(), "character 5") {
		t.Errorf("invalid-character error should name the character and position: %v", err)
	}
}

// Any single-character substitution is at most two symbol errors, which
// BIP 380 guarantees to detect; check that on a real descriptor.
func TestChecksumDetectsSubstitutions(t *testing.T) {
	d := mustParse(t, "wpkh([73c5da0a/84h/0h/0h]xpub6CatWdiZiodmUeTDp8LT5or8nmbKNcuyvz7WyksVFkKB4RHwCD3XyuvPEbvqAQY3rAPshWcMLoP2fMFMKHPJ4ZeZXYVUhLv1VMrjPC7PW6V/0/*)", nil)
	s := d.String()
	body := s[:strings.IndexByte(s, '#')]
	for i := 0; i < len(body); i++ {
		for j := 0; j < len(inputCharset); j++ {
			c := inputCharset[j]
			if c == body[i] || c == '#' {
				continue
			}
			mut := body[:i] + string(c) + s[i+1:]
			if _, err := splitChecksum(mut); err == nil {
				t.Fatalf("substituting %q at %d went undetected", c, i)
			}
		}
	}
}

func TestChecksumOfCanonicalString(t *testing.T) {
	d := mustParse(t, "pkh([d34db33f/44'/0'/0']xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL/1/*)", nil)
	s := d.String()
	i := strings.IndexByte(s, '#')
	sum, err := Checksum(s[:i])
	if err != nil || sum != s[i+1:] {
		t.Fatalf("String() checksum %q, Checksum() = %q, %v", s[i+1:], sum, err)
	}
	if !strings.Contains(s, "[d34db33f/44h/0h/0h]") {
		t.Errorf("canonical form should write hardened steps with h: %s", s)
	}
}
