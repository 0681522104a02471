package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/config"
	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/ledger"
	"github.com/coffer/coffer/internal/node"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/wallet"
)

const auditUsage = `Usage:
  coffer audit [-config FILE] [-json] [-node]

Re-derives the custodial books from the database and prints every
difference:
  - each account's balance against the sum of its postings, its hold against
    its queued withdrawals, and its pending total against its pending
    deposits;
  - each transfer's postings, which must sum to zero per asset;
  - for each custodial wallet, customer plus system liabilities against the
    booked holdings (the hot-wallet account), and the booked holdings against
    the wallet's confirmed unspent outputs (less confirmed deposits not yet
    credited).

It reads one consistent snapshot of the database and, without -node, needs
neither the node nor the master key; it is safe to run beside a running
coffer serve. The on-chain side is what the follower has applied, so audit
a synced server. Amounts are in satoshis.

  -json   print the report as JSON (the document GET /v1/audit answers,
          plus the -node differences)
  -node   also ask the node (node.url, gettxout) whether every output the
          database counts as a wallet's confirmed unspent coins is unspent
          in the node's best chain: a difference (check "chain_vs_node")
          means the database's view of the chain is wrong, which the
          checks above, reading the database only, cannot see. It warns
          when the follower is not at the node's tip, since the newest
          blocks may explain a difference.

Exit status: 0 when the books are clean, 1 when there is any difference or
the audit could not run, 2 for a usage mistake. Warnings (such as an account
below zero after a reversed deposit) do not change the exit status.
`

const custodyUsage = `Usage:
  coffer custody import-unaccounted -wallet ID [-config FILE]
  coffer custody rescan -wallet ID [-from HEIGHT] [-config FILE]

import-unaccounted books the confirmed on-chain funds of custodial wallet ID
that no account owns (coins paid to the hot wallet outside deposit
addresses, or before Coffer kept its books) to the wallet's imports account,
and prints the amount booked (0 when the books already match the chain). It
refuses, changing nothing, when the books claim more than the chain holds:
that is a shortfall to investigate with coffer audit, not something to
import. Coins paid to an account's deposit address belong to that account:
if Coffer may have missed deposits, run rescan (and let the recovery finish)
before importing.

rescan finds deposits missed while Coffer was down. It records a deposit for
every output, in transactions already in the database, that pays one of the
wallet's deposit addresses and has none yet (crediting those with enough
confirmations), then marks the wallet to recover its history again from
block HEIGHT (default, and at least: the wallet's birthday). The recovery
itself is done in the background by the running coffer serve (or the next
one started); GET /v1/wallets/ID shows its progress, and deposits it finds
are recorded and credited as usual. Until it is done the wallet is syncing
and its queued withdrawals wait: choose HEIGHT no lower than needed.

Both read the configuration as coffer serve does (-config or COFFER_CONFIG,
and COFFER_... variables), apply pending database migrations, and need
neither the node nor the master key; they may run while coffer serve runs.
Flags may also be written with two dashes (--wallet ID).

Exit status: 0 on success, 1 on failure (including a refused import or an
unknown wallet), 2 for a usage mistake.
`

// cmdAudit runs `coffer audit` and returns the process exit code: 0 when
// the books are clean, 1 when they differ or the audit failed, 2 for a
// usage mistake.
func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coffer audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage) }
	path := fs.String("config", os.Getenv("COFFER_CONFIG"), "configuration file (YAML)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	withNode := fs.Bool("node", false, "also ask the node whether the outputs the books count are unspent")
	pos, err := parseArgs(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "coffer audit: %v\n", err)
		return 2
	case len(pos) > 0:
		fmt.Fprintf(stderr, "coffer audit: unexpected argument %q\n\n%s", pos[0], auditUsage)
		return 2
	}
	svc, db, cfg, err := openLedger(ctx, *path, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "coffer audit: %v\n", err)
		return 1
	}
	defer db.Close()
	r, err := svc.Audit(ctx)
	if err == nil && *withNode {
		err = auditWithNode(ctx, cfg, db, r)
	}
	if err != nil {
		fmt.Fprintf(stderr, "coffer audit: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "coffer audit: %v\n", err)
			return 1
		}
	} else if err := printAudit(ctx, stdout, svc, r); err != nil {
		fmt.Fprintf(stderr, "coffer audit: %v\n", err)
		return 1
	}
	if !r.Clean {
		fmt.Fprintf(stderr, "coffer audit: %d difference(s) found\n", len(r.Differences))
		return 1
	}
	return 0
}

// printAudit writes the human form of an audit report.
func printAudit(ctx context.Context, w io.Writer, svc *ledger.Service, r *ledger.AuditReport) error {
	fmt.Fprintf(w, "Audit of %d account(s) in %d custodial wallet(s) at %s (amounts in satoshis)\n",
		r.Accounts, len(r.Wallets), cliTime(r.CheckedAt))
	if len(r.Wallets) > 0 {
		fmt.Fprintln(w)
		var table strings.Builder
		tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', tabwriter.AlignRight)
		// Numbers right-aligned, the wallet ids last and left-aligned.
		idWidth := 0
		for _, wa := range r.Wallets {
			idWidth = max(idWidth, len(wa.WalletID))
		}
		fmt.Fprintf(tw, "CUSTOMER LIAB.\tSYSTEM LIAB.\tBOOKED\tON-CHAIN\tUNACCOUNTED\tPENDING DEPOSITS\tASSET\t  %-*s\t\n", idWidth, "WALLET")
		for _, wa := range r.Wallets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t  %-*s\t\n", wa.Customers, wa.System,
				wa.Booked, wa.OnChain, wa.Unaccounted, wa.PendingDeposits, wa.Asset, idWidth, wa.WalletID)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for line := range strings.Lines(table.String()) {
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
		fmt.Fprint(w, `
BOOKED is what the hot-wallet account says Coffer holds; it should equal
CUSTOMER LIAB. + SYSTEM LIAB. and ON-CHAIN (confirmed unspent outputs less
PENDING DEPOSITS, which are confirmed but not yet credited). UNACCOUNTED is
ON-CHAIN − BOOKED.
`)
	}
	fmt.Fprintln(w)
	if len(r.Differences) == 0 {
		fmt.Fprintln(w, "No differences: the books are clean.")
	} else {
		fmt.Fprintf(w, "%d difference(s):\n", len(r.Differences))
		for i, d := range r.Differences {
			fmt.Fprintf(w, "%d. %s: %s\n", i+1, d.Check, d.Message)
			if d.WalletID != "" {
				fmt.Fprintf(w, "   wallet:   %s\n", d.WalletID)
			}
			if d.AccountID != "" {
				fmt.Fprintf(w, "   account:  %s\n", describeAccount(ctx, svc, d.AccountID))
			}
			fmt.Fprintf(w, "   expected: %s\n   actual:   %s\n", d.Expected, d.Actual)
			if diff, err := amount.Sub(d.Actual, d.Expected); err == nil {
				fmt.Fprintf(w, "   actual − expected: %s\n", diff)
			}
		}
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintf(w, "\n%d warning(s):\n", len(r.Warnings))
		for _, m := range r.Warnings {
			fmt.Fprintf(w, "- %s\n", m)
		}
	}
	return nil
}

// auditWithNode adds to r, per custodial wallet, the outputs the database
// counts as confirmed and unspent that the node says are spent or unknown
// in its best chain.
func auditWithNode(ctx context.Context, cfg config.Config, db *store.DB, r *ledger.AuditReport) error {
	client, err := node.New(node.Config{URL: cfg.Node.URL, User: cfg.Node.User, Password: cfg.Node.Password,
		CookieFile: cfg.Node.CookieFile, Timeout: cfg.Node.Timeout.D(), Retries: cfg.Node.Retries})
	if err != nil {
		return err
	}
	if err := checkNode(ctx, client, cfg.Chain.Network); err != nil {
		return err
	}
	var cursor string
	var height int64
	err = db.QueryRowContext(ctx, `SELECT hash, height FROM chain_cursor WHERE id = 1`).Scan(&cursor, &height)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	best, err := client.GetBestBlockHash(ctx)
	if err != nil {
		return fmt.Errorf("node at %s: %w", client.URL(), err)
	}
	if best != cursor {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the follower is at block %d (%s), not at the node's tip %s: blocks it has not applied yet may explain chain_vs_node differences",
			height, cursor, best))
	}
	for _, wa := range r.Wallets {
		rows, err := db.QueryContext(ctx, `SELECT o.txid, o.vout, o.amount FROM wallet_addresses a
			JOIN tx_outputs o ON o.script = a.script
			JOIN txs t ON t.txid = o.txid AND t.status = 'confirmed'
			WHERE a.wallet_id = $1 AND NOT EXISTS (SELECT 1 FROM tx_spends sp JOIN txs st ON st.txid = sp.txid
				WHERE sp.prev_txid = o.txid AND sp.prev_vout = o.vout AND st.status = 'confirmed')
			ORDER BY o.txid, o.vout`, wa.WalletID)
		type output struct {
			txid   string
			vout   uint32
			amount int64
		}
		outs, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (output, error) {
			var o output
			err := row.Scan(&o.txid, &o.vout, &o.amount)
			return o, err
		})
		if err != nil {
			return err
		}
		var counted, missing int64
		var named []string
		for _, o := range outs {
			counted += o.amount
			out, err := client.GetTxOut(ctx, o.txid, o.vout, false)
			if err != nil {
				return fmt.Errorf("node at %s: gettxout %s:%d: %w", client.URL(), o.txid, o.vout, err)
			}
			if out == nil {
				missing += o.amount
				if len(named) < 5 {
					named = append(named, fmt.Sprintf("%s:%d (%d sat)", o.txid, o.vout, o.amount))
				} else if len(named) == 5 {
					named = append(named, "…")
				}
			}
		}
		if missing != 0 {
			r.Differences = append(r.Differences, ledger.AuditDifference{Check: "chain_vs_node", WalletID: wa.WalletID,
				Expected: amount.Amount(counted - missing), Actual: amount.Amount(counted),
				Message: fmt.Sprintf("the database counts %d sat of confirmed unspent outputs that the node says are spent or unknown in its best chain: %s",
					missing, strings.Join(named, ", "))})
		}
	}
	r.Clean = len(r.Differences) == 0
	return nil
}

// describeAccount names an account for the audit's listing: its id, and
// its name and kind when they can be read.
func describeAccount(ctx context.Context, svc *ledger.Service, id string) string {
	a, err := svc.GetAccount(ctx, id)
	if err != nil {
		return id
	}
	if a.Kind == ledger.KindCustomer {
		return fmt.Sprintf("%s (customer account %q)", id, a.Name)
	}
	return fmt.Sprintf("%s (%s system account)", id, a.Kind)
}

// cmdCustody runs `coffer custody …` and returns the process exit code: 0
// on success, 2 for a usage mistake, 1 for any other failure.
func cmdCustody(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, custodyUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "import-unaccounted":
		err = custodyImport(ctx, args[1:], stdout, stderr)
	case "rescan":
		err = custodyRescan(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, custodyUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "coffer custody: unknown subcommand %q\n\n%s", args[0], custodyUsage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(stderr, "coffer custody %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stderr, "coffer custody %s: %v\n", args[0], err)
	return 1
}

// custodyFlags is a flag set with -config and -wallet whose errors print
// the custody usage.
func custodyFlags(name string, stderr io.Writer) (fs *flag.FlagSet, configPath, walletID *string) {
	fs = flag.NewFlagSet("coffer custody "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, custodyUsage) }
	configPath = fs.String("config", os.Getenv("COFFER_CONFIG"), "configuration file (YAML)")
	walletID = fs.String("wallet", "", "the custodial wallet's id (required)")
	return fs, configPath, walletID
}

// parseCustodyFlags parses args, which must hold flags only, and requires
// -wallet.
func parseCustodyFlags(fs *flag.FlagSet, args []string, walletID *string) error {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected argument %q (give the wallet as -wallet ID)", pos[0])
	}
	if strings.TrimSpace(*walletID) == "" {
		return usageErr("-wallet ID is required")
	}
	return nil
}

func custodyImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path, walletID := custodyFlags("import-unaccounted", stderr)
	if err := parseCustodyFlags(fs, args, walletID); err != nil {
		return err
	}
	svc, db, _, err := openLedger(ctx, *path, stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	booked, err := svc.ImportUnaccounted(ctx, *walletID)
	if err != nil {
		return err
	}
	if booked == 0 {
		fmt.Fprintf(stdout, "nothing to import: wallet %s's books already match its confirmed on-chain funds\n", *walletID)
		return nil
	}
	cw, err := svc.GetWallet(ctx, *walletID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "booked %s sat of unaccounted on-chain funds of wallet %s to its imports account %s\n",
		booked, *walletID, cw.Accounts.Imports)
	return nil
}

func custodyRescan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path, walletID := custodyFlags("rescan", stderr)
	from := fs.Int64("from", 0, "first block height to read again (default: the wallet's birthday)")
	if err := parseCustodyFlags(fs, args, walletID); err != nil {
		return err
	}
	if *from < 0 {
		return usageErr("-from must not be negative, got %d", *from)
	}
	svc, db, _, err := openLedger(ctx, *path, stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := svc.GetWallet(ctx, *walletID); err != nil {
		return err
	}
	tip := int64(-1)
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(height), -1) FROM chain_cursor`).Scan(&tip); err != nil {
		return err
	}
	if tip >= 0 && *from > tip {
		return fmt.Errorf("-from %d is past the last block the follower applied (%d): there is nothing to read again there", *from, tip)
	}
	found, err := svc.Rescan(ctx, *walletID, *from)
	if err != nil {
		return err
	}
	var scanFrom int64
	if err := db.QueryRowContext(ctx, `SELECT scan_height + 1 FROM wallets WHERE id = $1`, *walletID).Scan(&scanFrom); err != nil {
		return err
	}
	counts := map[string]int{}
	rows, err := db.QueryContext(ctx, `SELECT status, COUNT(*) FROM deposits WHERE wallet_id = $1 GROUP BY status`, *walletID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			rows.Close()
			return err
		}
		counts[status] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recorded %d new deposit(s) from transactions already in the database\n", found)
	fmt.Fprintf(stdout, "wallet %s's deposits now: %d pending, %d credited, %d processed, %d removed\n", *walletID,
		counts[ledger.DepositPending], counts[ledger.DepositCredited], counts[ledger.DepositProcessed], counts[ledger.DepositRemoved])
	fmt.Fprintf(stdout, "wallet %s will recover its history again from block %d (the follower has applied up to %d);\n", *walletID, scanFrom, tip)
	fmt.Fprintf(stdout, "the running coffer serve does this in the background (or the next one started): GET /v1/wallets/%s shows its progress\n", *walletID)
	return nil
}

// openLedger loads the configuration, opens and migrates the database as
// coffer migrate does, and builds the custodial ledger without a node, a
// follower or the master key: enough for the audit, imports and rescans,
// which only read and write the database. It is configured as coffer serve
// configures it, so deposits are credited at the same threshold.
func openLedger(ctx context.Context, configPath string, stderr io.Writer) (*ledger.Service, *store.DB, config.Config, error) {
	cfg, err := config.Load(configPath, os.Environ())
	if err != nil {
		return nil, nil, cfg, err
	}
	params, err := chain.Lookup(chain.Coin(cfg.Chain.Coin), chain.Network(cfg.Chain.Network))
	if err != nil {
		return nil, nil, cfg, err
	}
	db, err := openKeysDB(ctx, cfg)
	if err != nil {
		return nil, nil, cfg, err
	}
	logger := newLogger(cfg.Log, stderr)
	log := events.NewLog(db)
	wallets := wallet.New(db, params, log, nil, nil, walletConfig(cfg.Wallets), logger)
	return ledger.New(db, params, log, wallets, nil, nil, nil, ledgerConfig(cfg.Custody), logger), db, cfg, nil
}

// walletConfig is the wallet service's configuration from the file's.
func walletConfig(c config.Wallets) wallet.Config {
	return wallet.Config{DefaultGapLimit: c.GapLimit, ProposalTTL: c.ProposalTTL.D(),
		FallbackFeeRate: c.FallbackFeeRate, FullBlocks: c.FullBlocks}
}

// ledgerConfig is the ledger's configuration from the file's custody
// section.
func ledgerConfig(c config.Custody) ledger.Config {
	return ledger.Config{
		Confirmations: c.Confirmations, TrackConfirmations: c.TrackConfirmations,
		BatchInterval: c.BatchInterval.D(), BatchMaxCount: c.BatchMaxCount, BatchMaxSum: amount.Amount(c.BatchMaxSum),
		BumpAfter: c.BumpAfter.D(), WithdrawalFee: amount.Amount(c.WithdrawalFee),
		CustomerPaysNetworkFee: c.FeePayer == "customer", MaxNetworkFeeShare: amount.Amount(c.MaxNetworkFeeShare),
	}
}
