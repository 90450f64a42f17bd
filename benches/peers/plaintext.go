// plaintext — the Go peer for the plaintext benchmark (benches/plaintext.rs).
//
// A plain net/http server: GET /plaintext answers "Hello, World!" as text/plain, keep-alive,
// the way TechEmpower's Go entries do. Standard library only, so it builds offline with
// `GO111MODULE=off go build`. Run it with GOMAXPROCS=1 to compare one core against
// miohttpd's one loop and nginx's one worker.
//
//	plaintext -listen 127.0.0.1:0
//
// prints exactly one line, "plaintext listening on http://ADDR", then serves.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

var body = []byte("Hello, World!")

func plaintext(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(body)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	flag.Parse()

	// Listen first, then print: the line carries the real port when -listen asked for port 0.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "plaintext listening on http://%s\n", ln.Addr())
	os.Stdout.Sync()

	mux := http.NewServeMux()
	mux.HandleFunc("/plaintext", plaintext)
	log.Fatal(http.Serve(ln, mux))
}
