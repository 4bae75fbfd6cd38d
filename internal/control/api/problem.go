package api

import (
	"errors"
	"net/http"

	"github.com/gantry-paas/gantry/internal/control/apitypes"

	"github.com/danielgtaylor/huma/v2"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// storeBusy is the answer when the store could not be had in time.
func storeBusy() *apitypes.Problem {
	return problem(http.StatusServiceUnavailable, apitypes.CodeStoreBusy,
		"the server's database is busy (locked by another process, or slow): nothing was changed; try again in a few seconds, and if it lasts, an admin should look at the server log")
}

func codeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return apitypes.CodeUnauthorized
	case http.StatusForbidden:
		return apitypes.CodeForbidden
	case http.StatusNotFound:
		return apitypes.CodeNotFound
	case http.StatusConflict:
		return apitypes.CodeConflict
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return apitypes.CodeInvalid
	}
	if status >= 500 {
		return apitypes.CodeInternal
	}
	return "error"
}

// newProblem replaces huma's default error constructor.
func newProblem(status int, msg string, errs ...error) huma.StatusError {
	p := &apitypes.Problem{Status: status, Title: http.StatusText(status), Code: codeFor(status), Detail: msg}
	for _, e := range errs {
		var d huma.ErrorDetailer
		if errors.As(e, &d) {
			hd := d.ErrorDetail()
			p.Errors = append(p.Errors, &apitypes.ErrorDetail{Message: hd.Message, Location: hd.Location, Value: hd.Value})
		} else if e != nil {
			p.Errors = append(p.Errors, &apitypes.ErrorDetail{Message: e.Error()})
		}
	}
	if status == http.StatusUnprocessableEntity && msg == "validation failed" && len(p.Errors) > 0 {
		p.Detail = "invalid request: " + p.Errors[0].Error()
	}
	return p
}

func problem(status int, code, detail string) *apitypes.Problem {
	return &apitypes.Problem{Status: status, Title: http.StatusText(status), Code: code, Detail: detail}
}

func notFound(code, detail string) *apitypes.Problem {
	return problem(http.StatusNotFound, code, detail)
}
func invalid(detail string) *apitypes.Problem {
	return problem(http.StatusBadRequest, apitypes.CodeInvalid, detail)
}

// internal logs err and returns a problem that does not leak it.
func (a *API) internal(op string, err error) *apitypes.Problem {
	a.log.Error(op, "err", err)
	var down *store.UnavailableError
	if errors.As(err, &down) {
		return problem(http.StatusServiceUnavailable, apitypes.CodeStoreBusy, down.Error())
	}
	if errors.Is(err, store.ErrBusy) {
		return storeBusy()
	}
	if errors.Is(err, store.ErrFrozen) {
		return problem(http.StatusServiceUnavailable, apitypes.CodeStoreBusy, store.ErrFrozen.Error())
	}
	if errors.Is(err, store.ErrNotFound) {
		return notFound(apitypes.CodeNotFound, "it no longer exists")
	}
	return problem(http.StatusInternalServerError, apitypes.CodeInternal, op+" failed; the server log has details")
}
