package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
)

// System account kinds; every custodial wallet has one of each.
const (
	KindCustomer = "customer"
	KindHot      = "hot"      // the on-chain holdings (negative: an asset)
	KindFees     = "fees"     // network fees paid, withdrawal fees charged
	KindImports  = "imports"  // funds booked by import-unaccounted
	KindInflight = "inflight" // withdrawals signed but not yet confirmed
)

var systemKinds = []string{KindHot, KindFees, KindImports, KindInflight}

// CustodyWallet is a custodial wallet: the watch-only wallet of the same id
// plus the seed Coffer holds and the system accounts.
type CustodyWallet struct {
	ID        string         `json:"id"`
	Asset     string         `json:"asset"`
	Label     string         `json:"label"`
	Status    string         `json:"status"` // the watch-only wallet's: syncing, ready…
	Accounts  SystemAccounts `json:"system_accounts"`
	CreatedAt time.Time      `json:"created_at"`
	// Mnemonic is set only in the answer to a creation that asked for it.
	Mnemonic string `json:"mnemonic,omitempty"`
}

// SystemAccounts are the ids of a wallet's system accounts.
type SystemAccounts struct {
	Hot      string `json:"hot"`
	Fees     string `json:"fees"`
	Imports  string `json:"imports"`
	Inflight string `json:"inflight"`
}

// CreateWalletRequest asks for a custodial wallet. With neither Mnemonic nor
// Xprv, Coffer generates a new seed of Words words (12 or 24, default 24).
type CreateWalletRequest struct {
	Label          string
	Words          int
	ReturnMnemonic bool   // answer the generated mnemonic, once
	Mnemonic       string // import an existing BIP39 seed (no passphrase)
	Xprv           string // import an existing BIP84 account key
	BirthdayHeight *int64 // imports: scan history from here (default 0)
}

// CreateWallet makes a custodial wallet: it generates or imports the seed,
// registers the watch-only wallet that follows the chain for it, stores the
// secret encrypted, and opens the system accounts.
func (s *Service) CreateWallet(ctx context.Context, req CreateWalletRequest) (*CustodyWallet, error) {
	if s.keys == nil {
		return nil, noKeys()
	}
	if len(req.Label) > maxNameLen {
		return nil, errorf(ErrInvalid, "label is longer than %d bytes", maxNameLen)
	}
	if req.Mnemonic != "" && req.Xprv != "" {
		return nil, errorf(ErrInvalid, "give mnemonic or xprv, not both")
	}
	imported := req.Mnemonic != "" || req.Xprv != ""
	if imported && req.ReturnMnemonic {
		return nil, errorf(ErrInvalid, "return_mnemonic is for generated seeds; an imported one is not shown again")
	}
	if req.BirthdayHeight != nil && (!imported || *req.BirthdayHeight < 0) {
		return nil, errorf(ErrInvalid, "birthday_height is for imports and must not be negative")
	}
	kind, secret := keys.KindMnemonic, ""
	var account *hdkeychain.ExtendedKey
	var fp [4]byte
	switch {
	case req.Xprv != "":
		k, err := keys.ParseXprv(req.Xprv, s.params)
		if err != nil {
			return nil, errorf(ErrInvalid, "xprv: %v", err)
		}
		if fp, err = keys.KeyFingerprint(k); err != nil {
			return nil, err
		}
		kind, secret, account = keys.KindXprv, req.Xprv, k
	default:
		secret = keys.NormalizeMnemonic(req.Mnemonic)
		if secret == "" {
			words := req.Words
			if words == 0 {
				words = 24
			}
			if words != 12 && words != 24 {
				return nil, errorf(ErrInvalid, "words must be 12 or 24")
			}
			var err error
			if secret, err = keys.NewMnemonic(words); err != nil {
				return nil, err
			}
		} else if err := keys.ValidateMnemonic(secret); err != nil {
			return nil, errorf(ErrInvalid, "mnemonic: %v", err)
		}
		seed, err := keys.SeedFromMnemonic(secret, "")
		if err != nil {
			return nil, err
		}
		account, fp, err = keys.AccountKey(seed, s.params)
		clear(seed)
		if err != nil {
			return nil, err
		}
	}
	desc, err := keys.WatchDescriptor(account, fp, s.params)
	account.Zero()
	if err != nil {
		return nil, err
	}
	// An imported seed may have history from its birthday (default the
	// genesis block); a seed generated now has none, so its wallet needs
	// no scan of the chain so far.
	h := int64(0)
	if req.BirthdayHeight != nil {
		h = *req.BirthdayHeight
	} else if !imported {
		tip, err := tipHeight(ctx, s.db)
		if err != nil {
			return nil, err
		}
		h = max(tip, 0)
	}
	reg := wallet.RegisterRequest{Descriptor: desc, Label: req.Label, BirthdayHeight: &h}
	w, _, err := s.wallets.Register(ctx, reg)
	if err != nil {
		return nil, err
	}
	now := time.Now().Unix()
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM custody_wallets WHERE id = $1`, w.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errorf(ErrConflict, "custodial wallet %s already exists (the same seed was imported before)", w.ID)
		}
		if err := s.keys.Put(ctx, tx, w.ID, kind, []byte(secret)); err != nil {
			if errors.Is(err, keys.ErrInvalid) {
				return errorf(ErrInvalid, "%v", err)
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO custody_wallets (id, asset, label, created_at) VALUES ($1, $2, $3, $4)`,
			w.ID, s.asset, req.Label, now); err != nil {
			return err
		}
		for _, k := range systemKinds {
			if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, wallet_id, kind, name, asset, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $6)`, newID("acc_"), w.ID, k, k, s.asset, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cw, err := s.GetWallet(ctx, w.ID)
	if err != nil {
		return nil, err
	}
	if req.ReturnMnemonic {
		cw.Mnemonic = secret
	}
	return cw, nil
}

// GetWallet returns a custodial wallet.
func (s *Service) GetWallet(ctx context.Context, id string) (*CustodyWallet, error) {
	cw := &CustodyWallet{ID: id}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT c.asset, c.label, c.created_at, w.status FROM custody_wallets c
		JOIN wallets w ON w.id = c.id WHERE c.id = $1`, id).Scan(&cw.Asset, &cw.Label, &created, &cw.Status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no custodial wallet %s", id)
	}
	if err != nil {
		return nil, err
	}
	cw.CreatedAt = unixTime(created)
	sys, err := s.systemAccounts(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	cw.Accounts = sys
	return cw, nil
}

// ListWallets returns every custodial wallet, oldest first.
func (s *Service) ListWallets(ctx context.Context) ([]*CustodyWallet, error) {
	ids, err := s.walletIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*CustodyWallet, 0, len(ids))
	for _, id := range ids {
		cw, err := s.GetWallet(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, cw)
	}
	return out, nil
}

func (s *Service) walletIDs(ctx context.Context) ([]string, error) { return walletIDsOf(ctx, s.db) }

// systemAccounts returns the ids of the wallet's system accounts.
func (s *Service) systemAccounts(ctx context.Context, q querier, walletID string) (SystemAccounts, error) {
	var sys SystemAccounts
	rows, err := q.QueryContext(ctx, `SELECT kind, id FROM ledger_accounts WHERE wallet_id = $1 AND kind <> 'customer'`, walletID)
	if err != nil {
		return sys, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id string
		if err := rows.Scan(&kind, &id); err != nil {
			return sys, err
		}
		switch kind {
		case KindHot:
			sys.Hot = id
		case KindFees:
			sys.Fees = id
		case KindImports:
			sys.Imports = id
		case KindInflight:
			sys.Inflight = id
		}
	}
	if err := rows.Err(); err != nil {
		return sys, err
	}
	if sys.Hot == "" || sys.Fees == "" || sys.Imports == "" || sys.Inflight == "" {
		return sys, fmt.Errorf("ledger: wallet %s lacks a system account", walletID)
	}
	return sys, nil
}

// signingKey returns the wallet's account key and master fingerprint. The
// caller must Zero the key.
func (s *Service) signingKey(ctx context.Context, walletID string) (*hdkeychain.ExtendedKey, [4]byte, error) {
	var fp [4]byte
	if s.keys == nil {
		return nil, fp, noKeys()
	}
	kind, secret, err := s.keys.Get(ctx, walletID)
	if err != nil {
		return nil, fp, err
	}
	defer clear(secret)
	if kind == keys.KindXprv {
		k, err := keys.ParseXprv(string(secret), s.params)
		if err != nil {
			return nil, fp, err
		}
		fp, err = keys.KeyFingerprint(k)
		return k, fp, err
	}
	seed, err := keys.SeedFromMnemonic(string(secret), "")
	if err != nil {
		return nil, fp, err
	}
	defer clear(seed)
	return keys.AccountKey(seed, s.params)
}
