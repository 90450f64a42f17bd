// md5server — the original Go peer for the upload benchmark (benches/upload.rs).
//
// A plain net/http server: POST / streams the request body through MD5 with io.Copy and
// answers the digest as 32 lowercase hex characters. Standard library only, so it builds
// offline with `GO111MODULE=off go build`. Run it with GOMAXPROCS=1 to compare one core
// against miohttpd's one loop.
//
//	md5server -listen 127.0.0.1:0
//
// prints exactly one line, "md5server listening on http://ADDR", then serves.
package main

import (
	"crypto/md5"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func md5Handler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := md5.New()
	if _, err := io.Copy(h, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%x", h.Sum(nil))
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	flag.Parse()

	// Listen first, then print: the line carries the real port when -listen asked for port 0.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "md5server listening on http://%s\n", ln.Addr())
	os.Stdout.Sync()

	mux := http.NewServeMux()
	mux.HandleFunc("/", md5Handler)
	log.Fatal(http.Serve(ln, mux))
}
