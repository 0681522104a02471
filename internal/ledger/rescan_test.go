package ledger_test

import (
	"testing"

	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/store/storetest"
)

// TestRescanBeforeImport: a confirmed payment to a deposit address whose
// deposit was never recorded (here: deleted, as if Coffer had missed it)
// makes import-unaccounted refuse, since the coins are the account's; a
// rescan records the deposit, and the import then finds nothing to book.
func TestRescanBeforeImport(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, testConfig())
		ctx := e.ctx
		cw := e.newWallet("rescan")
		alice := e.account(cw.ID, "alice")
		txid, _, err := e.node.Fund(ctx, e.script(e.depositAddress(alice.ID)), 2_000_000)
		if err != nil {
			t.Fatal(err)
		}
		d := e.depositOf(alice.ID, txid)
		e.mine(1)
		err = db.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.ExecContext(ctx, `DELETE FROM deposits WHERE id = $1`, d.ID); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE ledger_accounts SET pending_in = pending_in - $2 WHERE id = $1`, alice.ID, int64(d.Amount))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		_, err = e.led.ImportUnaccounted(ctx, cw.ID)
		wantCode(t, err, "invalid_state")
		if n := e.count(`SELECT COUNT(*) FROM ledger_transfers WHERE kind = 'import'`); n != 0 {
			t.Fatalf("a refused import booked %d transfers", n)
		}

		found, err := e.led.Rescan(ctx, cw.ID, 0)
		if err != nil || found != 1 {
			t.Fatalf("rescan found %d deposits, %v; want 1", found, err)
		}
		if ds := e.deposits(alice.ID); len(ds) != 1 || ds[0].Txid != txid || ds[0].Confirmations != 1 {
			t.Fatalf("deposits after the rescan: %+v", ds)
		}
		if booked, err := e.led.ImportUnaccounted(ctx, cw.ID); err != nil || booked != 0 {
			t.Fatalf("import after the rescan booked %d, %v; want nothing", booked, err)
		}
	})
}
