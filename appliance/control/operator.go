package control

import (
	"context"
	"encoding/json"
)

// Operator is a Handler that also answers the operator commands (proto's
// operator.go: alert-test, ...). It returns an error with CodeUnknownCommand for a
// command it does not know.
type Operator interface {
	Operate(ctx context.Context, cmd string, args json.RawMessage) (Response, error)
}
