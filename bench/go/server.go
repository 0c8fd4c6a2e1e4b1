// The original server design on gorilla/websocket, as a reference for the
// benchmarks: /echo echoes every message; ?burst=N first writes N pushes in
// our protocol's JSON, one WriteMessage each (as the original did), then
// burst_done. With -push-interval, every connection also gets a timed push
// in our protocol's JSON from a ticker goroutine of its own, as the original
// design did (writes serialised by a mutex: gorilla allows one writer).
// Built by `cargo xtask bench` with Debian's golang-go and
// golang-github-gorilla-websocket-dev, offline (GOPATH mode).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
	CheckOrigin:     func(r *http.Request) bool { return true },
}

var pushInterval time.Duration

func handler(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	var writing sync.Mutex
	if pushInterval > 0 {
		done := make(chan struct{})
		defer close(done)
		go func() {
			ticker := time.NewTicker(pushInterval)
			defer ticker.Stop()
			for seq := 1; ; seq++ {
				select {
				case <-done:
					return
				case now := <-ticker.C:
					msg := fmt.Sprintf(`{"type":"push","seq":%d,"sent_at_ms":%d,"body":"tick"}`, seq, now.UnixMilli())
					writing.Lock()
					err := conn.WriteMessage(websocket.TextMessage, []byte(msg))
					writing.Unlock()
					if err != nil {
						return
					}
				}
			}
		}()
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("burst")); err == nil && n > 0 {
		start := time.Now()
		now := start.UnixMilli()
		for seq := 1; seq <= n; seq++ {
			msg := fmt.Sprintf(`{"type":"push","seq":%d,"sent_at_ms":%d,"body":"burst"}`, seq, now)
			if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				return
			}
		}
		done := fmt.Sprintf(`{"type":"burst_done","count":%d,"elapsed_ms":%d}`, n, time.Since(start).Milliseconds())
		if err := conn.WriteMessage(websocket.TextMessage, []byte(done)); err != nil {
			return
		}
	}
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		writing.Lock()
		err = conn.WriteMessage(kind, data)
		writing.Unlock()
		if err != nil {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.DurationVar(&pushInterval, "push-interval", 0, "timed push per connection (0: off)")
	flag.Parse()
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	log.Fatal(http.Serve(listener, http.HandlerFunc(handler)))
}
