// Command ocireg serves go-containerregistry's reference registry (pkg/registry)
// with the OCI 1.1 referrers API (referrers.go), for sigaudit's integration tests.
//
// Manifests are kept in memory; blobs go to --disk when given. Each request is
// written to --log as one access-log line, `"METHOD URI PROTO" STATUS BYTES`, the
// same shape as distribution's access log, so tests can count requests.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

type recorder struct {
	http.ResponseWriter
	status       int
	bytes        int
	beforeHeader func(status int) // optional: last chance to set response headers
}

func (r *recorder) WriteHeader(code int) {
	if r.status != 0 {
		return
	}
	r.status = code
	if r.beforeHeader != nil {
		r.beforeHeader(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func accessLog(out io.Writer, next http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, req)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "%s - - [%s] \"%s %s %s\" %d %d\n", req.RemoteAddr,
			time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700"), req.Method, req.RequestURI,
			req.Proto, rec.status, rec.bytes)
	})
}

func main() {
	addr := flag.String("address", "127.0.0.1:0", "address to listen on")
	disk := flag.String("disk", "", "directory for blobs (default: memory)")
	logPath := flag.String("log", "", "access log file (default: stdout)")
	flag.Parse()

	var out io.Writer = os.Stdout
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatalln(err)
		}
		out = f
	}

	opts := []registry.Option{
		registry.Logger(log.New(os.Stderr, "", log.LstdFlags)),
	}
	if *disk != "" {
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*disk)))
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalln(err)
	}
	log.Printf("serving on %s", ln.Addr())
	srv := &http.Server{Handler: accessLog(out, newReferrers().wrap(registry.New(opts...))), ReadHeaderTimeout: 5 * time.Second}
	log.Fatalln(srv.Serve(ln))
}
