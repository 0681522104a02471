package wshub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/coffer/coffer/internal/auth"
)

// conn is one client connection.
type conn struct {
	h   *Hub
	ws  *websocket.Conn
	p   *auth.Principal
	out *outbox
	ctx context.Context // ends when ServeWS returns

	mu         sync.Mutex // see Hub.mu for the lock order
	live       bool       // fed by the shared reader (else replaying, or gone)
	cursor     int64      // id of the last event processed for this connection
	subscribed bool
	types      typeFilter
	joined     map[string]bool
}

// kick closes the connection with code and reason (sent in the close frame
// by the writer). It never blocks on the network.
func (c *conn) kick(code websocket.StatusCode, reason string) bool {
	return c.out.close(code, reason)
}

// kickSlow disconnects a client whose queue is full.
func (c *conn) kickSlow() {
	if c.kick(websocket.StatusPolicyViolation, fmt.Sprintf("too slow: %d messages queued", c.h.cfg.QueueSize)) {
		c.h.slow.Add(1)
		c.h.logger.Info("wshub: disconnecting a slow client", "queued", c.h.cfg.QueueSize)
	}
}

// send queues a reply; a client whose queue is full is disconnected.
func (c *conn) send(m []byte) {
	if c.out.push(m) == pushFull {
		c.kickSlow()
	}
}

// render appends the messages ev produces for this connection. c.mu is held.
func (c *conn) render(it *item, dst [][]byte) [][]byte {
	ev := &it.ev
	if c.subscribed && c.types.match(ev.Type) && visible(c.p, ev) {
		if b := it.eventBytes(); b != nil {
			dst = append(dst, b)
		}
	}
	if ev.WalletID != "" {
		if c.joined[ev.WalletID] {
			if it.needsClass() {
				// Joined after the batch was prepared: rare, look it up now.
				c.h.classify(c.ctx, it)
			}
			if b := it.pushBytes(); b != nil {
				dst = append(dst, b)
			}
		}
	} else if it.kind == TypeBlock && (c.subscribed || len(c.joined) > 0) {
		if b := it.pushBytes(); b != nil {
			dst = append(dst, b)
		}
	}
	return dst
}

// deliverLive hands a batch of the shared stream to a live connection,
// skipping what its cursor has passed. Hub.mu is held; nothing here waits.
func (c *conn) deliverLive(ctx context.Context, items []*item, buf [][]byte) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		return buf
	}
	for _, it := range items {
		if it.ev.ID <= c.cursor {
			continue
		}
		buf = c.render(it, buf[:0])
		c.cursor = it.ev.ID
		for _, m := range buf {
			switch c.out.push(m) {
			case pushFull:
				c.kickSlow()
				c.live = false
				return buf
			case pushClosed:
				c.live = false
				return buf
			}
		}
	}
	return buf
}

// replay reads the log from the connection's cursor and queues what it
// finds, waiting for the client as needed, until it has caught up with the
// shared stream; then the connection goes live. A later subscribe with
// "after" starts a new generation, which ends this replay.
func (c *conn) replay(gen uint64) {
	h := c.h
	var buf [][]byte
	for {
		c.mu.Lock()
		if !c.out.current(gen) {
			c.mu.Unlock()
			return
		}
		cur := c.cursor
		c.mu.Unlock()
		evs, err := h.log.List(c.ctx, cur, h.cfg.ReplayPage)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			h.logger.Warn("wshub: replaying the event log", "after", cur, "err", err)
			if !sleep(c.ctx, time.Second) {
				return
			}
			continue
		}
		items := make([]*item, len(evs))
		need := make([]bool, len(evs))
		c.mu.Lock()
		for i, ev := range evs {
			items[i] = newItem(ev)
			need[i] = items[i].needsClass() && c.joined[ev.WalletID]
		}
		c.mu.Unlock()
		for i, it := range items {
			if need[i] {
				h.classify(c.ctx, it)
			}
		}
		for _, it := range items {
			c.mu.Lock()
			if !c.out.current(gen) {
				c.mu.Unlock()
				return
			}
			if it.ev.ID <= c.cursor {
				c.mu.Unlock()
				continue
			}
			buf = c.render(it, buf[:0])
			c.cursor = it.ev.ID
			c.mu.Unlock()
			for _, m := range buf {
				if !c.out.pushWait(c.ctx, m, gen) {
					return
				}
			}
		}
		if len(evs) == h.cfg.ReplayPage {
			continue
		}
		// Caught up with the log as it was a moment ago. Let the queue drain
		// to half, so the live stream does not find it full, then switch if
		// the shared reader has not moved past the cursor meanwhile.
		if !c.out.waitBelow(c.ctx, h.cfg.QueueSize/2, gen) {
			return
		}
		h.mu.Lock()
		c.mu.Lock()
		if !c.out.current(gen) {
			c.mu.Unlock()
			h.mu.Unlock()
			return
		}
		if c.cursor >= h.pos {
			c.live = true
			pos := c.cursor
			c.send(encodeReply(reply{Type: TypeLive, After: &pos}))
			c.mu.Unlock()
			h.mu.Unlock()
			return
		}
		c.mu.Unlock()
		h.mu.Unlock()
	}
}

// readLoop reads and answers client messages until the connection fails.
func (c *conn) readLoop() {
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return
		}
		c.h.received.Add(1)
		if typ != websocket.MessageText {
			c.send(errorReply(CodeInvalidMessage, "", "send JSON text messages"))
			continue
		}
		c.handle(data)
	}
}

func (c *conn) handle(data []byte) {
	var m clientMsg
	if err := json.Unmarshal(data, &m); err != nil {
		c.send(errorReply(CodeInvalidMessage, "", "a message is a JSON object with an \"action\""))
		return
	}
	switch m.Action {
	case ActionPing:
		c.send(pongMsg)
	case ActionJoin:
		c.join(m.ID)
	case ActionLeave:
		c.leave(m.ID)
	case ActionSubscribe:
		c.subscribe(m.Types, m.After)
	case ActionUnsubscribe:
		c.unsubscribe()
	case "":
		c.send(errorReply(CodeInvalidMessage, "", "missing \"action\""))
	default:
		if len(m.Action) > 50 {
			m.Action = m.Action[:50]
		}
		c.send(errorReply(CodeInvalidMessage, m.Action, "unknown action %q (want ping, join, leave, subscribe or unsubscribe)", m.Action))
	}
}

func validWalletID(id string) bool { return id != "" && len(id) <= maxWalletID }

func (c *conn) join(id string) {
	if !validWalletID(id) {
		c.send(errorReply(CodeInvalidMessage, ActionJoin, "join needs the wallet's \"id\""))
		return
	}
	if !c.p.AllowWallet(id) {
		c.send(errorReply(CodeForbidden, ActionJoin, "the credentials do not cover wallet %s", id))
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.joined[id] {
		if len(c.joined) >= maxJoined {
			c.send(errorReply(CodeLimit, ActionJoin, "a connection may join at most %d wallets", maxJoined))
			return
		}
		c.joined[id] = true
		h.joined[id]++
	}
	// Queued under the locks, so it comes before any push for the wallet.
	c.send(encodeReply(reply{Type: TypeJoined, ID: id}))
}

func (c *conn) leave(id string) {
	if !validWalletID(id) {
		c.send(errorReply(CodeInvalidMessage, ActionLeave, "leave needs the wallet's \"id\""))
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joined[id] {
		delete(c.joined, id)
		h.unjoinLocked(id)
	}
	c.send(encodeReply(reply{Type: TypeLeft, ID: id}))
}

func (c *conn) subscribe(types []string, after *int64) {
	f, err := parseTypes(types)
	if err != nil {
		c.send(errorReply(CodeInvalidMessage, ActionSubscribe, "%v", err))
		return
	}
	if after != nil && *after < 0 {
		c.send(errorReply(CodeInvalidMessage, ActionSubscribe, "\"after\" must be an event id (>= 0)"))
		return
	}
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscribed, c.types = true, f
	if types == nil {
		types = []string{}
	}
	if after == nil {
		// Live from where the connection is; "after" tells the client.
		pos := c.cursor
		c.send(encodeReply(reply{Type: TypeSubscribed, Types: types, After: &pos}))
		return
	}
	gen, res := c.out.newGen(encodeReply(reply{Type: TypeSubscribed, Types: types, After: after}))
	switch res {
	case pushFull:
		c.kickSlow()
		return
	case pushClosed:
		return
	}
	c.cursor, c.live = *after, false
	h.wg.Add(1) // the connection's own count is held, so this cannot race Wait
	go func() {
		defer h.wg.Done()
		c.replay(gen)
	}()
}

func (c *conn) unsubscribe() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscribed = false
	c.send(encodeReply(reply{Type: TypeUnsubscribed}))
}

// writeLoop writes queued messages, pings the client and, once the outbox
// closes, closes the WebSocket with the outbox's status.
func (c *conn) writeLoop() {
	ping := time.NewTicker(c.h.cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	for {
		select {
		case <-c.out.notify:
		case <-ping.C:
			go c.ping()
			continue
		case <-c.ctx.Done():
			return
		}
		var closed bool
		batch, closed = c.out.take(batch)
		for i, m := range batch {
			if closed || c.out.isClosed() {
				closed = true
				break
			}
			wctx, cancel := context.WithTimeout(c.ctx, c.h.cfg.WriteTimeout)
			err := c.ws.Write(wctx, websocket.MessageText, m)
			cancel()
			batch[i] = nil
			if err != nil {
				c.kick(websocket.StatusAbnormalClosure, "")
				c.ws.CloseNow()
				return
			}
			c.h.sent.Add(1)
		}
		clear(batch)
		if closed {
			code, reason := c.out.status()
			c.ws.Close(code, reason)
			return
		}
	}
}

func (c *conn) ping() {
	ctx, cancel := context.WithTimeout(c.ctx, c.h.cfg.PongTimeout)
	defer cancel()
	if err := c.ws.Ping(ctx); err != nil && c.ctx.Err() == nil && !c.out.isClosed() {
		// The peer is unresponsive, so no close handshake: drop the TCP
		// connection; the reader sees it and cleans up.
		c.h.pingTimeouts.Add(1)
		c.kick(websocket.StatusPolicyViolation, "ping timeout")
		c.ws.CloseNow()
		c.h.logger.Debug("wshub: closing a client that did not answer a ping", "err", err)
	}
}
