package accesslog

import "net/http"

// Recorder notes a response's status and body size for the access log
// and the metrics; Unwrap keeps Flush and Hijack reachable through
// http.ResponseController. A 101 (a protocol switch) may be followed by
// the status the upgraded exchange ends with.
type Recorder struct {
	http.ResponseWriter
	Status int
	Bytes  int64
}

func (w *Recorder) WriteHeader(code int) {
	if w.Status == 0 || w.Status == http.StatusSwitchingProtocols {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *Recorder) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.Bytes += int64(n)
	return n, err
}

func (w *Recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
