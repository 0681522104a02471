package wshub

import (
	"context"
	"sync"

	"github.com/coder/websocket"
)

// outbox is a connection's bounded send queue. The shared reader pushes
// without waiting (a full queue disconnects the client); a replaying
// connection's own goroutine waits for room instead. gen changes whenever a
// subscribe moves the connection's position, so a replay that was overtaken
// can no longer push.
type outbox struct {
	mu     sync.Mutex
	msgs   [][]byte
	max    int
	gen    uint64
	closed bool
	code   websocket.StatusCode
	reason string
	notify chan struct{} // capacity 1: there is something to take
	taken  chan struct{} // closed and replaced when the writer takes messages or the box closes
}

func newOutbox(max int) *outbox {
	return &outbox{max: max, notify: make(chan struct{}, 1), taken: make(chan struct{})}
}

type pushResult int

const (
	pushed pushResult = iota
	pushFull
	pushClosed
)

func (o *outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *outbox) wakeWaiters() {
	close(o.taken)
	o.taken = make(chan struct{})
}

// push queues m unless the box is closed or full.
func (o *outbox) push(m []byte) pushResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pushLocked(m)
}

func (o *outbox) pushLocked(m []byte) pushResult {
	if o.closed {
		return pushClosed
	}
	if len(o.msgs) >= o.max {
		return pushFull
	}
	o.msgs = append(o.msgs, m)
	o.signal()
	return pushed
}

// newGen starts a new generation and queues m, its first message.
func (o *outbox) newGen(m []byte) (uint64, pushResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen++
	return o.gen, o.pushLocked(m)
}

// current reports whether gen is still the box's generation and it is open.
func (o *outbox) current(gen uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.closed && o.gen == gen
}

// pushWait queues m, waiting for room. It fails when the box closes, the
// generation moves on or ctx ends.
func (o *outbox) pushWait(ctx context.Context, m []byte, gen uint64) bool {
	for {
		o.mu.Lock()
		if o.closed || o.gen != gen {
			o.mu.Unlock()
			return false
		}
		if len(o.msgs) < o.max {
			o.msgs = append(o.msgs, m)
			o.signal()
			o.mu.Unlock()
			return true
		}
		ch := o.taken
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// waitBelow waits until at most n messages are queued, with the same
// failure conditions as pushWait.
func (o *outbox) waitBelow(ctx context.Context, n int, gen uint64) bool {
	for {
		o.mu.Lock()
		if o.closed || o.gen != gen {
			o.mu.Unlock()
			return false
		}
		if len(o.msgs) <= n {
			o.mu.Unlock()
			return true
		}
		ch := o.taken
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// take hands the queued messages to the writer, giving buf (emptied) back to
// the box for reuse, and reports whether the box is closed.
func (o *outbox) take(buf [][]byte) ([][]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	msgs := o.msgs
	o.msgs = buf[:0]
	if len(msgs) > 0 {
		o.wakeWaiters()
	}
	return msgs, o.closed
}

// close closes the box with the status the writer is to close the
// WebSocket with, drops what is queued, and reports whether this call
// closed it.
func (o *outbox) close(code websocket.StatusCode, reason string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.closed, o.code, o.reason = true, code, reason
	o.msgs = nil
	o.signal()
	o.wakeWaiters()
	return true
}

func (o *outbox) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

func (o *outbox) status() (websocket.StatusCode, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.code, o.reason
}
