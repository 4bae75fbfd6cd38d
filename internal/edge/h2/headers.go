package h2

import (
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A request's header block (HEADERS and its CONTINUATIONs) is decoded
// here rather than by the framer's ReadMetaHeaders: the same checks
// (field names and values, pseudo-fields first, once each and known, the
// header list's size, a CONTINUATION flood), but the fields gathered in
// the connection's scratch slice and copied out once, at their size,
// instead of a frame and a slice grown field by field per request.

// headerBlock is a decoded header block.
type headerBlock struct {
	id        uint32
	end       bool // END_STREAM
	prio      bool // a priority, depending on dep
	dep       uint32
	fields    []hpack.HeaderField
	truncated bool // over the header list limit: the rest was dropped
}

// blockDecoder is the reader goroutine's HPACK state and the block being
// decoded.
type blockDecoder struct {
	dec     *hpack.Decoder
	block   headerBlock
	scratch []hpack.HeaderField
	left    uint32 // of the header list limit
	regular bool   // a regular field came (pseudo-fields must come first)
	invalid bool
}

func newBlockDecoder(maxList uint32) *blockDecoder {
	d := &blockDecoder{}
	d.dec = hpack.NewDecoder(4096, d.emit)
	d.dec.SetMaxStringLength(int(maxList))
	return d
}

func (d *blockDecoder) emit(f hpack.HeaderField) {
	if d.invalid || d.block.truncated {
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		d.invalid = true
		return
	}
	if f.IsPseudo() {
		if d.regular {
			d.invalid = true
			return
		}
	} else {
		d.regular = true
		if !validWireName(f.Name) {
			d.invalid = true
			return
		}
	}
	if size := f.Size(); size > d.left {
		d.block.truncated, d.left = true, 0
		return
	} else {
		d.left -= size
	}
	d.scratch = append(d.scratch, f)
}

// begin starts the block of a HEADERS frame.
func (d *blockDecoder) begin(f *http2.HeadersFrame, maxList uint32) {
	d.block = headerBlock{id: f.StreamID, end: f.StreamEnded(), prio: f.HasPriority(), dep: f.Priority.StreamDep}
	d.scratch, d.left, d.regular, d.invalid = d.scratch[:0], maxList, false, false
}

// write decodes a fragment; done when it ended the block. The block is
// then d.block, or the error is a stream error (a malformed request:
// the HPACK state is whole) or a connection error.
func (d *blockDecoder) write(frag []byte, ended bool) (bool, error) {
	if len(frag) > 2*int(d.left) {
		// More than the fields the list has room for could take (as
		// x/net's framer: after the limit, any): a CONTINUATION flood.
		return false, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := d.dec.Write(frag); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !ended {
		return false, nil
	}
	if err := d.dec.Close(); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if d.invalid || !pseudoOK(d.scratch) {
		return true, http2.StreamError{StreamID: d.block.id, Code: http2.ErrCodeProtocol}
	}
	d.block.fields = append([]hpack.HeaderField(nil), d.scratch...)
	return true, nil
}

// pseudoOK says the pseudo-fields are a request's, each once.
func pseudoOK(fields []hpack.HeaderField) bool {
	var seen uint8
	for _, f := range fields {
		if !f.IsPseudo() {
			break
		}
		var bit uint8
		switch f.Name {
		case ":method":
			bit = 1
		case ":scheme":
			bit = 2
		case ":authority":
			bit = 4
		case ":path":
			bit = 8
		case ":protocol":
			bit = 16
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return true
}

// validWireName is a header name as HTTP/2 sends it: a token, in lower
// case.
func validWireName(v string) bool {
	return httpguts.ValidHeaderFieldName(v) && strings.ToLower(v) == v
}
