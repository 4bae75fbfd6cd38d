package console

import (
	"io"
	"net/http"
	"sync"
)

// handlerTransport sends the console's API calls to the API handler in
// the same process: the console uses the API and nothing else, without a
// network hop. Responses stream (a followed log) through a pipe.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	// The API sees a server-side request (RequestURI, RemoteAddr).
	in := req.Clone(req.Context())
	in.RequestURI = req.URL.RequestURI()
	if in.RemoteAddr == "" {
		in.RemoteAddr = "127.0.0.1:0"
	}
	if in.Body == nil {
		in.Body = http.NoBody
	}
	go func() {
		defer func() {
			w.WriteHeader(http.StatusOK) // nothing written: an empty 200
			pw.Close()
		}()
		t.h.ServeHTTP(w, in)
	}()
	<-w.ready
	return &http.Response{StatusCode: w.status, Status: http.StatusText(w.status), Header: w.header, Body: pr,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1, Request: req}, nil
}

// pipeWriter is a ResponseWriter whose body is read from a pipe.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	once   sync.Once
	status int
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.header = w.header.Clone() // later changes are not seen
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

func (w *pipeWriter) Flush() {}
