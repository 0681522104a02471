package wshub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/events"
)

// Client actions.
const (
	ActionPing        = "ping"
	ActionJoin        = "join"
	ActionLeave       = "leave"
	ActionSubscribe   = "subscribe"
	ActionUnsubscribe = "unsubscribe"
)

// Server message types.
const (
	TypePong         = "pong"
	TypeJoined       = "joined"
	TypeLeft         = "left"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeLive         = "live" // a replay has caught up; live events follow
	TypeError        = "error"
	TypeEvent        = "event"     // an event of the log, for subscribers
	TypeNewTx        = "new-tx"    // a transaction first touched a joined wallet
	TypeUpdateTx     = "update-tx" // a later change of such a transaction
	TypeBalance      = "balance"   // balance.changed of a joined wallet
	TypeBlock        = "block"     // block.connected, to every joined or subscribed connection
)

// Error codes of {"type":"error"} messages.
const (
	CodeInvalidMessage = "invalid_message"
	CodeForbidden      = "forbidden"
	CodeLimit          = "limit_exceeded"
)

// Wallet event types the hub knows besides those of package events (they are
// declared in package wallet, which this package does not import).
const (
	eventBalanceChanged = "balance.changed"
)

// Protocol limits.
const (
	maxTypes     = 64  // entries of a subscribe "types" list
	maxTypeLen   = 100 // bytes of one entry
	maxWalletID  = 200 // bytes of a wallet id in join/leave
	maxJoined    = 1000
	maxErrDetail = 200
)

// clientMsg is any message a client sends.
type clientMsg struct {
	Action string   `json:"action"`
	ID     string   `json:"id"`
	Types  []string `json:"types"`
	After  *int64   `json:"after"`
}

// reply is a direct answer to a client message.
type reply struct {
	Type    string   `json:"type"`
	ID      string   `json:"id,omitempty"`
	Types   []string `json:"types,omitempty"`
	After   *int64   `json:"after,omitempty"`
	Code    string   `json:"code,omitempty"`
	Message string   `json:"message,omitempty"`
	Action  string   `json:"action,omitempty"`
}

func encodeReply(r reply) []byte {
	b, err := json.Marshal(r)
	if err != nil { // cannot happen: only strings and numbers
		return []byte(`{"type":"error","code":"internal","message":"encoding failed"}`)
	}
	return b
}

func errorReply(code, action, format string, args ...any) []byte {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxErrDetail {
		msg = msg[:maxErrDetail]
	}
	return encodeReply(reply{Type: TypeError, Code: code, Action: action, Message: msg})
}

var pongMsg = encodeReply(reply{Type: TypePong})

// eventMsg is {"type":"event","event":…}.
type eventMsg struct {
	Type  string        `json:"type"`
	Event *events.Event `json:"event"`
}

// pushMsg is a new-tx, update-tx, balance or block push.
type pushMsg struct {
	Type      string          `json:"type"`
	EventID   int64           `json:"event_id"`
	EventType string          `json:"event_type"`
	WalletID  string          `json:"wallet_id,omitempty"`
	Data      json.RawMessage `json:"data"`
}

// typeFilter matches event types: exact names, or prefixes written with a
// trailing "*" ("deposit.*", or "*" for everything). An empty filter matches
// every type.
type typeFilter struct {
	exact    map[string]bool
	prefixes []string
	all      bool
}

func parseTypes(types []string) (typeFilter, error) {
	f := typeFilter{exact: map[string]bool{}}
	if len(types) == 0 {
		f.all = true
		return f, nil
	}
	if len(types) > maxTypes {
		return f, fmt.Errorf("at most %d types", maxTypes)
	}
	for _, t := range types {
		if t == "" || len(t) > maxTypeLen {
			return f, errors.New("a type must be 1 to 100 characters")
		}
		if i := strings.IndexByte(t, '*'); i >= 0 {
			if i != len(t)-1 {
				return f, fmt.Errorf("type %q: '*' may only end a type", t)
			}
			if i == 0 {
				f.all = true
			}
			f.prefixes = append(f.prefixes, t[:i])
			continue
		}
		f.exact[t] = true
	}
	return f, nil
}

func (f *typeFilter) match(typ string) bool {
	if f.all || f.exact[typ] {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// isChainEvent reports whether a global event (no wallet id) is a chain
// event every authenticated client may see: block.* and chain.*.
func isChainEvent(typ string) bool {
	return strings.HasPrefix(typ, "block.") || strings.HasPrefix(typ, "chain.")
}

// isWalletTxEvent reports whether typ is one of the per-wallet transaction
// events (written with the wallet's id by the wallet service).
func isWalletTxEvent(typ string) bool {
	switch typ {
	case events.TxSeen, events.TxConfirmed, events.TxReorged, events.TxReplaced, events.TxConflicted, events.TxDropped:
		return true
	}
	return false
}

// walletTxTypes lists those types for SQL.
const walletTxTypesSQL = `'tx.seen','tx.confirmed','tx.reorged','tx.replaced','tx.conflicted','tx.dropped'`

// visible reports whether p may see ev through a subscription: an operator
// API key sees every event; a wallet token sees its wallet's events and the
// global chain events (block.*, chain.*).
func visible(p *auth.Principal, ev *events.Event) bool {
	if p.Kind == auth.KindAPIKey {
		return p.Allows(auth.ScopeRead)
	}
	if ev.WalletID != "" {
		return p.AllowWallet(ev.WalletID)
	}
	return isChainEvent(ev.Type) && p.Allows(auth.ScopeRead)
}
