// Package keys is the encrypted key store of Coffer's custodial (hot)
// wallets: BIP39 seeds and BIP84 account keys, their envelope encryption at
// rest, the master keys that protect them, and PSBT signing.
//
// # Envelope encryption
//
// Every owner (a custodial wallet id) has its own random 256-bit data key
// (DEK). The owner's secret, a mnemonic or an account xprv, is sealed with
// AES-256-GCM under the DEK, with additional data binding the owner id and
// the kind of secret, so a ciphertext copied to another row does not open.
// The DEK is sealed ("wrapped") with AES-256-GCM under the current master
// key, with additional data binding the owner id and the master key's id.
// Rows of the custody_secrets table hold only the wrapped DEK, the sealed
// secret and the id of the master key that wrapped the DEK: a database dump,
// a backup or a replica reveals nothing without the master key, which is
// never stored in the database.
//
// # Master keys
//
// A Provider hands out the master keys: the current one, which wraps every
// new DEK, and any older ones that still unwrap rows written before a
// rotation. A master key is 32 random bytes, written as 64 hex characters;
// its id is the first 8 bytes of its SHA-256 in hex, so a row names the key
// that wrapped it without revealing it. `coffer keys generate-master` prints
// a new key.
//
// FileProvider reads keys from a file, one per line, the first line being
// the current key; blank lines and lines starting with # are ignored. The
// file must not be readable by group or others (chmod 600), as ssh demands
// of private keys. It is re-read whenever its size, modification time or
// identity changes, so a running server picks up a rotated file without a
// restart. EnvProvider reads the same format, keys separated by commas,
// from an environment variable once.
//
// Other providers, such as a cloud KMS or HashiCorp Vault, only need to
// implement Provider. One that never lets the master key leave the KMS would
// wrap and unwrap DEKs remotely instead; the stored format already names
// the wrapping key by id and keeps the wrapped DEK opaque, so such a
// provider can be added behind the same Store by widening Provider to a
// wrap/unwrap interface without a schema change.
//
// # Rotating the master key
//
//  1. Generate a new key: coffer keys generate-master.
//  2. Put it as the FIRST line of the key file, keeping the old key on a
//     line below it (for EnvProvider: first in the comma-separated list).
//     Do this on every machine that runs Coffer against the database. From
//     then on, new secrets are wrapped under the new key and old rows still
//     open with the old one; running servers pick the file up at once.
//  3. Run coffer keys rotate-master -master-key-file FILE (or
//     -master-key-env NAME). It re-wraps every data key that is not yet
//     under the first key, one row per short transaction, while servers keep
//     working, and prints how many rows it re-wrapped and how many rows each
//     master key now protects.
//  4. When it reports that every secret is under the new key, remove the old
//     key's line from the key file on every machine, and destroy the old key
//     (keep it with old backups if those must stay readable: a backup taken
//     before the rotation still needs it).
//
// Rotation re-wraps the DEKs only; the sealed secrets do not change, so it
// is fast and never touches a plaintext seed.
//
// # Seeds, accounts and signing
//
// NewMnemonic, ValidateMnemonic and SeedFromMnemonic implement BIP39 on top
// of github.com/tyler-smith/go-bip39 (English word list). AccountKey derives
// the BIP84 account key m/84'/coin'/0' of a seed; ParseXprv imports an
// account-level extended private key. WatchDescriptor gives the matching
// watch-only wpkh() descriptor that Coffer's wallets register, and SignPSBT
// signs the P2WPKH inputs of a PSBT that derive from the account.
//
// Buffers holding secrets are zeroed after use where Go allows it; strings
// (such as a mnemonic passed as a string) cannot be, so callers should keep
// secrets in []byte where they can and clear them when done.
package keys
