package deltacome

// #include <deltacome/deltacome.h>
import "C"

import "fmt"

// Status is a library status code (dc_errors.h). Values are pinned; the set is open-ended.
// A Status is itself an error, so errors.Is(err, deltacome.StatusChecksum) tests a failure's code.
type Status int

const (
	StatusOK                 Status = C.DC_OK
	StatusInvalidArgument    Status = C.DC_ERR_INVALID_ARGUMENT
	StatusIO                 Status = C.DC_ERR_IO
	StatusBadMagic           Status = C.DC_ERR_BAD_MAGIC
	StatusUnsupportedVersion Status = C.DC_ERR_UNSUPPORTED_VERSION
	StatusTruncated          Status = C.DC_ERR_TRUNCATED
	StatusCorrupt            Status = C.DC_ERR_CORRUPT
	StatusChecksum           Status = C.DC_ERR_CHECKSUM
	StatusOverflow           Status = C.DC_ERR_OVERFLOW
	StatusLimit              Status = C.DC_ERR_LIMIT
	StatusNotFound           Status = C.DC_ERR_NOT_FOUND
	StatusOutOfMemory        Status = C.DC_ERR_OUT_OF_MEMORY
	StatusBaseMismatch       Status = C.DC_ERR_BASE_MISMATCH
	StatusUnsupported        Status = C.DC_ERR_UNSUPPORTED
	StatusBackend            Status = C.DC_ERR_BACKEND
	StatusShapeMismatch      Status = C.DC_ERR_SHAPE_MISMATCH
	StatusDuplicate          Status = C.DC_ERR_DUPLICATE
	StatusOverlap            Status = C.DC_ERR_OVERLAP
	StatusDecompress         Status = C.DC_ERR_DECOMPRESS
	StatusBudget             Status = C.DC_ERR_BUDGET
	StatusBusy               Status = C.DC_ERR_BUSY
	StatusInternal           Status = C.DC_ERR_INTERNAL
)

// String is the library's static name ("DC_ERR_CHECKSUM: checksum mismatch").
func (s Status) String() string { return C.GoString(C.dc_status_string(C.dc_status(s))) }

// Error makes a bare Status usable as an errors.Is target.
func (s Status) Error() string { return s.String() }

// Error is a failed call: the status and the one-line message naming what is wrong (the library's
// dc_last_error_message(), or this package's own message for checks made before calling C).
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Status, e.Message) }

// Is reports whether target is this error's Status (errors.Is(err, StatusChecksum)).
func (e *Error) Is(target error) bool {
	s, ok := target.(Status)
	return ok && s == e.Status
}

func newError(s Status, format string, args ...any) error {
	return &Error{Status: s, Message: fmt.Sprintf(format, args...)}
}
