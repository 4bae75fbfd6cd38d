package apitypes

import "fmt"

// Problem is an RFC 9457 problem+json error with a stable Code that clients
// match on. Detail says what to do next.
type Problem struct {
	Type   string         `json:"type,omitempty" doc:"A URI reference for the problem type"`
	Title  string         `json:"title" doc:"Short summary of the status"`
	Status int            `json:"status" doc:"HTTP status code"`
	Code   string         `json:"code" doc:"Stable machine-readable code, e.g. app_not_found"`
	Detail string         `json:"detail" doc:"What happened and what to do next"`
	Errors []*ErrorDetail `json:"errors,omitempty" doc:"Details of invalid fields"`
}

func (p *Problem) Error() string  { return p.Detail }
func (p *Problem) GetStatus() int { return p.Status }

// ContentType makes the server send application/problem+json.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" {
		return "application/problem+json"
	}
	return ct
}

// ErrorDetail is one invalid field of a request.
type ErrorDetail struct {
	Message  string `json:"message,omitempty" doc:"Error message text"`
	Location string `json:"location,omitempty" doc:"Where the error occurred, e.g. 'body.items[3].tags' or 'path.thing-id'"`
	Value    any    `json:"value,omitempty" doc:"The value at the given location"`
}

func (e *ErrorDetail) Error() string {
	if e.Location == "" && e.Value == nil {
		return e.Message
	}
	return fmt.Sprintf("%s (%s: %v)", e.Message, e.Location, e.Value)
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
