package wshub

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"

	"github.com/coffer/coffer/internal/events"
	"github.com/coffer/coffer/internal/store"
)

// item is one event prepared for delivery: its messages are encoded once and
// shared by every connection that receives them.
type item struct {
	ev events.Event

	eventOnce sync.Once
	eventMsg  []byte // {"type":"event",…}; nil when the event cannot be encoded

	// The wallet push (new-tx, update-tx, balance) or block push; kind is
	// "" when the event has none. For wallet tx events kind stays "" until
	// classify decides between new-tx and update-tx.
	pushOnce   sync.Once
	kind       string
	classified bool
	pushMsg    []byte
}

func newItem(ev events.Event) *item {
	it := &item{ev: ev}
	switch {
	case ev.WalletID != "" && ev.Type == eventBalanceChanged:
		it.kind, it.classified = TypeBalance, true
	case ev.WalletID == "" && ev.Type == events.BlockConnected:
		it.kind, it.classified = TypeBlock, true
	case ev.WalletID != "" && isWalletTxEvent(ev.Type):
		// classified later, and only if a connection joined the wallet
	default:
		it.classified = true
	}
	return it
}

// needsClass reports whether the item is a wallet tx event not yet classified.
func (it *item) needsClass() bool { return !it.classified }

func (it *item) eventBytes() []byte {
	it.eventOnce.Do(func() {
		b, err := json.Marshal(eventMsg{Type: TypeEvent, Event: &it.ev})
		if err == nil {
			it.eventMsg = b
		}
	})
	return it.eventMsg
}

// pushBytes returns the push message; the item must be classified.
func (it *item) pushBytes() []byte {
	if it.kind == "" {
		return nil
	}
	it.pushOnce.Do(func() {
		m := pushMsg{Type: it.kind, EventID: it.ev.ID, EventType: it.ev.Type, WalletID: it.ev.WalletID, Data: it.ev.Data}
		if len(m.Data) == 0 {
			m.Data = json.RawMessage("null")
		}
		b, err := json.Marshal(m)
		if err == nil {
			it.pushMsg = b
		}
	})
	return it.pushMsg
}

// txKey names a transaction as seen by one wallet.
type txKey struct{ wallet, txid string }

// txMark records what the log says about a wallet's transaction: events with
// an id above id are not its first; when first is set, id itself is.
type txMark struct {
	id    int64
	first bool
}

// classifier decides whether a wallet tx event is the transaction's first
// event for that wallet (new-tx) or a later one (update-tx). The answer comes
// from the log itself, so it is the same for every connection, instance and
// replay: an event is new-tx exactly when no earlier tx.* event of the same
// wallet names the same txid (tx.reorged is always update-tx). Answers are
// remembered in a bounded memo, so a transaction costs one lookup per
// process (see earlier), made only when some connection has joined the
// wallet.
type classifier struct {
	db      *store.DB
	maxMemo int
	page    int // events per backward step of earlier

	mu       sync.Mutex
	cur, old map[txKey]txMark
	queries  uint64
}

func newClassifier(db *store.DB, maxMemo int) *classifier {
	return &classifier{db: db, maxMemo: maxMemo, page: 2000, cur: map[txKey]txMark{}, old: map[txKey]txMark{}}
}

func (c *classifier) lookup(k txKey) (txMark, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.cur[k]; ok {
		return m, true
	}
	m, ok := c.old[k]
	return m, ok
}

// remember keeps m unless the memo already holds a mark that tells more: a
// higher id, or the same id known to be the first.
func (c *classifier) remember(k txKey, m txMark) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.cur[k]; ok && (have.id > m.id || have.id == m.id && (have.first || !m.first)) {
		return
	}
	if len(c.cur) >= c.maxMemo {
		c.old, c.cur = c.cur, make(map[txKey]txMark, c.maxMemo/4)
	}
	c.cur[k] = m
}

// classify sets it.kind for a wallet tx event. On a database error the item
// falls back to the type alone (tx.seen is new-tx, the rest update-tx) and
// is not remembered.
func (c *classifier) classify(ctx context.Context, it *item) error {
	if it.classified {
		return nil
	}
	isNew, err := c.isNew(ctx, &it.ev)
	if err != nil {
		isNew = it.ev.Type == events.TxSeen
	}
	it.kind = TypeUpdateTx
	if isNew {
		it.kind = TypeNewTx
	}
	it.classified = true
	return err
}

func (c *classifier) isNew(ctx context.Context, ev *events.Event) (bool, error) {
	if ev.Type == events.TxReorged {
		return false, nil // only ever written for a transaction the wallet had confirmed
	}
	var d struct {
		Txid string `json:"txid"`
	}
	if json.Unmarshal(ev.Data, &d) != nil || d.Txid == "" {
		return false, nil
	}
	k := txKey{ev.WalletID, d.Txid}
	if m, ok := c.lookup(k); ok {
		if ev.ID > m.id {
			return false, nil
		}
		if ev.ID == m.id && m.first {
			return true, nil
		}
	}
	c.mu.Lock()
	c.queries++
	c.mu.Unlock()
	prev, err := c.earlier(ctx, ev.WalletID, d.Txid, ev.ID)
	if err != nil {
		return false, err
	}
	if prev == 0 {
		c.remember(k, txMark{id: ev.ID, first: true})
		return true, nil
	}
	c.remember(k, txMark{id: prev})
	return false, nil
}

// clockSlack widens the time bound of earlier against clock adjustments.
const clockSlack = 10 * 60 // seconds

// earlier returns the id of the newest tx.* event of wallet naming txid with
// an id below before, or 0 if there is none. It walks the wallet's events
// backwards (the events_wallet index) a page at a time and stops at the
// wallet's first event or once a page reaches back before the transaction
// was first seen (txs.first_seen_at, less clockSlack): no event can name it
// earlier. So a new transaction costs one page, not the wallet's history.
// The data column is the JSON written by events.Log.Append (encoding/json:
// no spaces), so the txid appears as "txid":"<txid>".
func (c *classifier) earlier(ctx context.Context, wallet, txid string, before int64) (int64, error) {
	since := int64(math.MinInt64)
	var firstSeen int64
	err := c.db.QueryRowContext(ctx, `SELECT first_seen_at FROM txs WHERE txid = $1`, txid).Scan(&firstSeen)
	switch {
	case err == nil:
		since = firstSeen - clockSlack
	case !errors.Is(err, sql.ErrNoRows):
		return 0, err
	}
	pattern := `%"txid":` + likeEscape(jsonString(txid)) + `%`
	for {
		var hit, minID, minAt sql.NullInt64
		var n int
		err := c.db.QueryRowContext(ctx, `WITH w AS (
				SELECT id, type, data, created_at FROM events
				WHERE wallet_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3)
			SELECT (SELECT MAX(id) FROM w WHERE type IN (`+walletTxTypesSQL+`) AND data LIKE $4 ESCAPE '\'),
				(SELECT MIN(id) FROM w), (SELECT MIN(created_at) FROM w), (SELECT COUNT(*) FROM w)`,
			wallet, before, c.page, pattern).Scan(&hit, &minID, &minAt, &n)
		if err != nil {
			return 0, err
		}
		if hit.Valid {
			return hit.Int64, nil
		}
		if n < c.page || minAt.Int64 < since {
			return 0, nil
		}
		before = minID.Int64
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// likeEscape escapes LIKE's wildcards with a backslash.
func likeEscape(s string) string { return likeEscaper.Replace(s) }
