package api

import (
	"errors"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/store"
)

// Problem is an RFC 9457 problem+json error with a stable Code that clients
// match on. Detail says what to do next.
type Problem struct {
	Type   string              `json:"type,omitempty" doc:"A URI reference for the problem type"`
	Title  string              `json:"title" doc:"Short summary of the status"`
	Status int                 `json:"status" doc:"HTTP status code"`
	Code   string              `json:"code" doc:"Stable machine-readable code, e.g. app_not_found"`
	Detail string              `json:"detail" doc:"What happened and what to do next"`
	Errors []*huma.ErrorDetail `json:"errors,omitempty" doc:"Details of invalid fields"`
}

func (p *Problem) Error() string  { return p.Detail }
func (p *Problem) GetStatus() int { return p.Status }

// ContentType makes huma send application/problem+json.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" {
		return "application/problem+json"
	}
	return ct
}

// Stable error codes.
const (
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
	CodeNotFound       = "not_found"
	CodeInvalid        = "invalid_request"
	CodeConflict       = "conflict"
	CodeNameTaken      = "name_taken"
	CodeDeployFailed   = "deploy_failed"
	CodeNothingRunning = "nothing_deployed"
	CodeInternal       = "internal_error"
	CodeStoreBusy      = "store_busy"
)

// storeBusy is the answer when the store could not be had in time.
func storeBusy() *Problem {
	return problem(http.StatusServiceUnavailable, CodeStoreBusy,
		"the server's database is busy (locked by another process, or slow): nothing was changed; try again in a few seconds, and if it lasts, an admin should look at the server log")
}

func codeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return CodeInvalid
	}
	if status >= 500 {
		return CodeInternal
	}
	return "error"
}

// newProblem replaces huma's default error constructor.
func newProblem(status int, msg string, errs ...error) huma.StatusError {
	p := &Problem{Status: status, Title: http.StatusText(status), Code: codeFor(status), Detail: msg}
	for _, e := range errs {
		var d huma.ErrorDetailer
		if errors.As(e, &d) {
			p.Errors = append(p.Errors, d.ErrorDetail())
		} else if e != nil {
			p.Errors = append(p.Errors, &huma.ErrorDetail{Message: e.Error()})
		}
	}
	if status == http.StatusUnprocessableEntity && msg == "validation failed" && len(p.Errors) > 0 {
		p.Detail = "invalid request: " + p.Errors[0].Error()
	}
	return p
}

func problem(status int, code, detail string) *Problem {
	return &Problem{Status: status, Title: http.StatusText(status), Code: code, Detail: detail}
}

func notFound(code, detail string) *Problem { return problem(http.StatusNotFound, code, detail) }
func invalid(detail string) *Problem        { return problem(http.StatusBadRequest, CodeInvalid, detail) }

// internal logs err and returns a problem that does not leak it.
func (a *API) internal(op string, err error) *Problem {
	a.log.Error(op, "err", err)
	if errors.Is(err, store.ErrBusy) {
		return storeBusy()
	}
	if errors.Is(err, store.ErrNotFound) {
		return notFound(CodeNotFound, "it no longer exists")
	}
	return problem(http.StatusInternalServerError, CodeInternal, op+" failed; the server log has details")
}
