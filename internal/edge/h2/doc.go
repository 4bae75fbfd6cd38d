// Package h2 serves HTTP/2 (RFC 9113) on connections the router has
// already terminated TLS on, to an http.Handler.
//
// It owns the connection: the preface and SETTINGS, streams and their
// states, flow control both ways, HPACK (x/net's hpack and its frame
// reader, which also bounds header lists and CONTINUATION floods),
// extended CONNECT (RFC 8441, WebSockets over h2), graceful GOAWAY, the
// idle timeout and the rapid-reset guard. It must not know about apps or
// routes: what a request means is the handler's.
//
// Why not x/net/http2's server: it runs a serve goroutine per connection
// that every frame passes through, and writes each response's HEADERS
// from a goroutine of its own; per request that was most of the router's
// HTTP/2 CPU. Here the reader goroutine handles a frame where it reads
// it, and a handler writes its frames itself.
//
// Concurrency: per connection one reader goroutine (ServeConn's), one
// goroutine per stream the handler serves, and a writer goroutine
// started while there are bytes to send. A request without a body is
// first offered to Server.Direct, on the reader goroutine: what it takes
// it answers from wherever it likes (the router: its event loops)
// through the Stream, and no goroutine is started for it. Everything shared — the
// streams, both directions' windows, the HPACK encoder, the output
// buffer — is under the connection's one mutex, held only to update
// state and append frames, never across I/O: frames are appended to a
// buffer, and the writer sends what has gathered in one write, so many
// streams' frames leave together. A stream waits (for window, room in the
// buffer or request body) on a sync.Cond of its own over that mutex.
package h2
