package ledger_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestNoSecretStored: after creating a wallet from a generated seed and one
// from an imported xprv, and paying withdrawals from both (so the signer
// ran and the batches are journaled), no cell of any table, and no byte of
// the SQLite files, holds a mnemonic, seed, extended or plain private key,
// or the master key, raw or in hex.
func TestNoSecretStored(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		params := e.node.Chain()

		gen, err := e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Label: "generated", ReturnMnemonic: true})
		if err != nil {
			t.Fatal(err)
		}
		mnemonic := gen.Mnemonic
		if len(strings.Fields(mnemonic)) != 24 {
			t.Fatalf("generated mnemonic has %d words", len(strings.Fields(mnemonic)))
		}
		if again, err := e.led.GetWallet(ctx, gen.ID); err != nil || again.Mnemonic != "" {
			t.Fatalf("the mnemonic is shown again: %+v, %v", again, err)
		}
		seed, err := keys.SeedFromMnemonic(mnemonic, "")
		if err != nil {
			t.Fatal(err)
		}
		genAcct, _, err := keys.AccountKey(seed, params)
		if err != nil {
			t.Fatal(err)
		}

		otherMnemonic, err := keys.NewMnemonic(12)
		if err != nil {
			t.Fatal(err)
		}
		otherSeed, err := keys.SeedFromMnemonic(otherMnemonic, "")
		if err != nil {
			t.Fatal(err)
		}
		impAcct, _, err := keys.AccountKey(otherSeed, params)
		if err != nil {
			t.Fatal(err)
		}
		xprv := impAcct.String()
		// A refused import names no key material.
		mainAcct, _, err := keys.AccountKey(otherSeed, mainnetParams(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Xprv: mainAcct.String()})
		wantCode(t, err, "invalid_parameter")
		if strings.Contains(err.Error(), mainAcct.String()[4:40]) {
			t.Fatalf("the error quotes the key: %v", err)
		}
		tip := e.tip()
		imp, err := e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Label: "imported", Xprv: xprv, BirthdayHeight: &tip})
		if err != nil {
			t.Fatal(err)
		}
		if imp.Mnemonic != "" {
			t.Fatal("an import answered a mnemonic")
		}
		_, err = e.led.CreateWallet(ctx, ledger.CreateWalletRequest{Xprv: xprv, BirthdayHeight: &tip})
		wantCode(t, err, "conflict")
		e.waitReady(gen.ID)
		e.waitReady(imp.ID)

		// Sign with both: a deposit and a withdrawal each.
		var accts []*ledger.Account
		for _, cw := range []*ledger.CustodyWallet{gen, imp} {
			accts = append(accts, e.account(cw.ID, "customer of "+cw.Label))
		}
		e.fundAccounts(accts, 5_000_000)
		for _, a := range accts {
			if _, err := e.led.RequestWithdrawal(ctx, ledger.WithdrawalRequest{Account: a.ID, Address: e.externalAddress(), Amount: 1_000_000}, ""); err != nil {
				t.Fatal(err)
			}
		}
		e.tick()
		e.mine(1)
		if n := e.count(`SELECT COUNT(*) FROM withdrawals WHERE status = 'confirmed'`); n != 2 {
			t.Fatalf("%d withdrawals confirmed, want 2", n)
		}

		needles := map[string][]byte{
			"mnemonic":                 []byte(mnemonic),
			"mnemonic words":           []byte(strings.Join(strings.Fields(mnemonic)[:4], " ")),
			"imported seed's mnemonic": []byte(otherMnemonic),
			"seed":                     seed,
			"seed hex":                 []byte(hex.EncodeToString(seed)),
			"seed prefix":              seed[:16],
			"other seed":               otherSeed,
			"xprv":                     []byte(xprv),
			"xprv body":                []byte(xprv[20:60]),
			"generated account xprv":   []byte(genAcct.String()),
			"master key":               e.master.Key[:],
			"master key hex":           []byte(hex.EncodeToString(e.master.Key[:])),
			"master key HEX":           []byte(strings.ToUpper(hex.EncodeToString(e.master.Key[:]))),
			"master key prefix":        e.master.Key[:12],
		}
		for name, k := range map[string]*hdkeychain.ExtendedKey{"generated": genAcct, "imported": impAcct} {
			addKey(t, needles, name+" account key", k)
			for branch := range uint32(2) {
				for idx := range uint32(3) {
					child, err := k.Derive(branch)
					if err == nil {
						child, err = child.Derive(idx)
					}
					if err != nil {
						t.Fatal(err)
					}
					addKey(t, needles, fmt.Sprintf("%s key %d/%d", name, branch, idx), child)
				}
			}
		}
		search := func(where string, data []byte) {
			for name, needle := range needles {
				if bytes.Contains(data, needle) {
					t.Errorf("%s holds the %s", where, name)
				}
			}
		}
		places, cells := storetest.Dump(t, db)
		for _, p := range places {
			search(p.Where, p.Data)
		}
		for _, table := range []string{"custody_secrets", "custody_wallets", "custody_batches", "ledger_accounts", "wallets", "events", "withdrawals"} {
			if cells[table] == 0 {
				t.Fatalf("the dump read nothing of %s: %v", table, cells)
			}
		}
	})
}

// addKey adds an extended private key's private key, raw and in hex, and
// its serialization to the needles.
func addKey(t *testing.T, needles map[string][]byte, name string, k *hdkeychain.ExtendedKey) {
	t.Helper()
	priv, err := k.ECPrivKey()
	if err != nil {
		t.Fatal(err)
	}
	b := priv.Serialize()
	needles[name] = b
	needles[name+" hex"] = []byte(hex.EncodeToString(b))
	needles[name+" xprv"] = []byte(k.String())
}

func mainnetParams(t *testing.T) *chain.Params {
	t.Helper()
	p, err := chain.Lookup(chain.BTC, chain.Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
