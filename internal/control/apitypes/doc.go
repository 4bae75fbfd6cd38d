// Package apitypes holds the shapes the REST API speaks: the views it
// answers with and its problem+json error. It is what the client side (the
// CLI, the typed client) shares with the server, so it imports nothing of
// the server side; the architecture test holds it to that.
package apitypes
