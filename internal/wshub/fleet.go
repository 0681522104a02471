package wshub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Fleet is a crowd of WebSocket clients for load tests such as
// "coffer bench ws": every client connects, sends the hello messages, waits
// for one reply to each, and then notes when each block push arrives.
type Fleet struct {
	n       int
	conns   []*websocket.Conn
	closing atomic.Bool
	wg      sync.WaitGroup

	mu       sync.Mutex
	arrivals map[int64]*arrival
	dead     int
	lastErr  error
	changed  chan struct{} // closed and replaced when a client dies
}

// Arrival tells when the block push of one event reached a fleet.
type Arrival struct {
	Clients     int       // clients that have received it
	First, Last time.Time // first and latest receipt
}

type arrival struct {
	Arrival
	done chan struct{} // closed when every client has it
}

var blockPrefix = []byte(`{"type":"block","event_id":`)

// DialFleet connects n clients to url (ws://…/v1/ws) sending header, with at
// most parallel handshakes at a time. Each client sends the hello messages
// (for example {"action":"join","id":"…"} or {"action":"subscribe",…}) and
// waits for a reply to each; an error reply fails the dial.
func DialFleet(ctx context.Context, url string, header http.Header, n, parallel int, hello ...[]byte) (*Fleet, error) {
	if parallel <= 0 {
		parallel = 32
	}
	f := &Fleet{n: n, conns: make([]*websocket.Conn, n), arrivals: map[int64]*arrival{}, changed: make(chan struct{})}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dialOne(ctx, url, header, hello)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("client %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			f.conns[i] = c
		}()
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		for _, c := range f.conns {
			if c != nil {
				c.CloseNow()
			}
		}
		return nil, firstErr
	}
	for _, c := range f.conns {
		f.wg.Add(1)
		go f.read(c)
	}
	return f, nil
}

func dialOne(ctx context.Context, url string, header http.Header, hello [][]byte) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	for _, m := range hello {
		if err := c.Write(ctx, websocket.MessageText, m); err != nil {
			c.CloseNow()
			return nil, err
		}
		_, r, err := c.Read(ctx)
		if err != nil {
			c.CloseNow()
			return nil, err
		}
		if bytes.HasPrefix(r, []byte(`{"type":"error"`)) {
			c.CloseNow()
			return nil, fmt.Errorf("hello %s: %s", m, r)
		}
	}
	return c, nil
}

func (f *Fleet) read(c *websocket.Conn) {
	defer f.wg.Done()
	for {
		// Not a shared cancellable context: every Read registers with its
		// context, and 10,000 clients would queue on one parent's lock.
		_, m, err := c.Read(context.Background())
		if err != nil {
			if !f.closing.Load() {
				f.mu.Lock()
				f.dead++
				f.lastErr = err
				close(f.changed)
				f.changed = make(chan struct{})
				f.mu.Unlock()
			}
			return
		}
		if !bytes.HasPrefix(m, blockPrefix) {
			continue
		}
		rest := m[len(blockPrefix):]
		end := bytes.IndexByte(rest, ',')
		if end < 0 {
			continue
		}
		id, err := strconv.ParseInt(string(rest[:end]), 10, 64)
		if err != nil {
			continue
		}
		now := time.Now()
		f.mu.Lock()
		a := f.arrivalLocked(id)
		a.Clients++
		if a.First.IsZero() {
			a.First = now
		}
		a.Last = now
		if a.Clients == f.n {
			close(a.done)
		}
		f.mu.Unlock()
	}
}

func (f *Fleet) arrivalLocked(id int64) *arrival {
	a := f.arrivals[id]
	if a == nil {
		a = &arrival{done: make(chan struct{})}
		f.arrivals[id] = a
	}
	return a
}

// Len returns the number of clients.
func (f *Fleet) Len() int { return f.n }

// Wait waits until every client has received the block push of eventID and
// says when it arrived. It fails when ctx ends or a client's connection
// breaks first.
func (f *Fleet) Wait(ctx context.Context, eventID int64) (Arrival, error) {
	for {
		f.mu.Lock()
		a := f.arrivalLocked(eventID)
		dead, lastErr, changed := f.dead, f.lastErr, f.changed
		got := a.Arrival
		f.mu.Unlock()
		if got.Clients == f.n {
			return got, nil
		}
		if dead > 0 && got.Clients+dead >= f.n {
			return got, fmt.Errorf("wshub: %d of %d clients disconnected: %w", dead, f.n, lastErr)
		}
		select {
		case <-a.done:
		case <-changed:
		case <-ctx.Done():
			return got, errors.Join(ctx.Err(), fmt.Errorf("wshub: %d of %d clients received event %d", got.Clients, f.n, eventID))
		}
	}
}

// Close disconnects every client.
func (f *Fleet) Close() {
	f.closing.Store(true)
	for _, c := range f.conns {
		c.CloseNow()
	}
	f.wg.Wait()
}
