package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// ErrNoNotifications means the node has no WebSocket notification endpoint
// (Bitcoin Core and Litecoin Core offer ZMQ instead); callers fall back to
// polling alone.
var ErrNoNotifications = errors.New("node offers no websocket notifications")

// Notify subscribes to new blocks and mempool transactions over btcd's
// WebSocket RPC endpoint (/ws) and calls onNotify for each notification until
// ctx ends or the connection drops. Notifications only say "look now": the
// follower still reads everything through ordinary RPC, so a missed one
// costs at most one poll interval.
func (c *Client) Notify(ctx context.Context, onNotify func(method string)) error {
	user, pass, err := c.credentials()
	if err != nil {
		return err
	}
	url := "ws" + strings.TrimPrefix(strings.TrimSuffix(c.cfg.URL, "/"), "http") + "/ws"
	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return ErrUnauthorized
		}
		if resp != nil {
			return fmt.Errorf("%w (HTTP %d)", ErrNoNotifications, resp.StatusCode)
		}
		return &TransportError{err}
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	for i, method := range []string{"notifyblocks", "notifynewtransactions"} {
		params := []any{}
		if method == "notifynewtransactions" {
			params = []any{false}
		}
		b, _ := json.Marshal(request{JSONRPC: "1.0", ID: uint64(i + 1), Method: method, Params: params})
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			return &TransportError{err}
		}
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &TransportError{err}
		}
		var msg struct {
			Method string    `json:"method"`
			Error  *RPCError `json:"error"`
		}
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		if msg.Error != nil {
			return msg.Error
		}
		if msg.Method != "" {
			onNotify(msg.Method)
		}
	}
}
