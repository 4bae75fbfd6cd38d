// Package architecture holds no code: its test fences the layout by role
// (see ARCHITECTURE.md, "Who may import whom"). It fails the build when a
// package imports upward, the client side reaches past apitypes, the edge
// reaches into control or node, or a store key is spelled outside
// control/store.
package architecture
