//! Errors: the library's status code plus its one-line message.
use deltacome_sys as sys;
use std::ffi::CStr;
use std::fmt;

/// A library status code (dc_errors.h). Open-ended: codes added by later library versions arrive
/// as [`Status::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    InvalidArgument,
    Io,
    BadMagic,
    UnsupportedVersion,
    Truncated,
    Corrupt,
    Checksum,
    Overflow,
    Limit,
    NotFound,
    OutOfMemory,
    BaseMismatch,
    Unsupported,
    Backend,
    ShapeMismatch,
    Duplicate,
    Overlap,
    Decompress,
    Budget,
    Busy,
    Internal,
    Other(u32),
}

impl Status {
    /// The status for a non-zero `dc_status` value.
    pub fn from_code(code: sys::dc_status) -> Status {
        use Status::*;
        match code {
            sys::DC_ERR_INVALID_ARGUMENT => InvalidArgument,
            sys::DC_ERR_IO => Io,
            sys::DC_ERR_BAD_MAGIC => BadMagic,
            sys::DC_ERR_UNSUPPORTED_VERSION => UnsupportedVersion,
            sys::DC_ERR_TRUNCATED => Truncated,
            sys::DC_ERR_CORRUPT => Corrupt,
            sys::DC_ERR_CHECKSUM => Checksum,
            sys::DC_ERR_OVERFLOW => Overflow,
            sys::DC_ERR_LIMIT => Limit,
            sys::DC_ERR_NOT_FOUND => NotFound,
            sys::DC_ERR_OUT_OF_MEMORY => OutOfMemory,
            sys::DC_ERR_BASE_MISMATCH => BaseMismatch,
            sys::DC_ERR_UNSUPPORTED => Unsupported,
            sys::DC_ERR_BACKEND => Backend,
            sys::DC_ERR_SHAPE_MISMATCH => ShapeMismatch,
            sys::DC_ERR_DUPLICATE => Duplicate,
            sys::DC_ERR_OVERLAP => Overlap,
            sys::DC_ERR_DECOMPRESS => Decompress,
            sys::DC_ERR_BUDGET => Budget,
            sys::DC_ERR_BUSY => Busy,
            sys::DC_ERR_INTERNAL => Internal,
            other => Other(other),
        }
    }

    /// The numeric `dc_status` value.
    pub fn code(self) -> sys::dc_status {
        use Status::*;
        match self {
            InvalidArgument => sys::DC_ERR_INVALID_ARGUMENT,
            Io => sys::DC_ERR_IO,
            BadMagic => sys::DC_ERR_BAD_MAGIC,
            UnsupportedVersion => sys::DC_ERR_UNSUPPORTED_VERSION,
            Truncated => sys::DC_ERR_TRUNCATED,
            Corrupt => sys::DC_ERR_CORRUPT,
            Checksum => sys::DC_ERR_CHECKSUM,
            Overflow => sys::DC_ERR_OVERFLOW,
            Limit => sys::DC_ERR_LIMIT,
            NotFound => sys::DC_ERR_NOT_FOUND,
            OutOfMemory => sys::DC_ERR_OUT_OF_MEMORY,
            BaseMismatch => sys::DC_ERR_BASE_MISMATCH,
            Unsupported => sys::DC_ERR_UNSUPPORTED,
            Backend => sys::DC_ERR_BACKEND,
            ShapeMismatch => sys::DC_ERR_SHAPE_MISMATCH,
            Duplicate => sys::DC_ERR_DUPLICATE,
            Overlap => sys::DC_ERR_OVERLAP,
            Decompress => sys::DC_ERR_DECOMPRESS,
            Budget => sys::DC_ERR_BUDGET,
            Busy => sys::DC_ERR_BUSY,
            Internal => sys::DC_ERR_INTERNAL,
            Other(code) => code,
        }
    }

    /// The library's static name for the code ("DC_ERR_CHECKSUM: checksum mismatch").
    pub fn name(self) -> &'static str {
        // SAFETY: dc_status_string never returns NULL and the string is static.
        unsafe { CStr::from_ptr(sys::dc_status_string(self.code())) }.to_str().unwrap_or("unknown status")
    }
}

/// A failed call: the status and the message the library stored for it
/// (`dc_last_error_message()`), or a message of this crate for checks it makes before calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }
    pub fn status(&self) -> Status {
        self.status
    }
    /// The numeric `dc_status`.
    pub fn code(&self) -> sys::dc_status {
        self.status.code()
    }
    /// The one-line message naming what is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns a status into a Result, copying the thread-local message right away (it is valid only
/// until the next deltacome call on this thread; nothing else runs in between).
pub(crate) fn check(status: sys::dc_status) -> Result<()> {
    if status == sys::DC_OK {
        return Ok(());
    }
    // SAFETY: never NULL, NUL-terminated, valid until the next call on this thread.
    let message = unsafe { CStr::from_ptr(sys::dc_last_error_message()) }.to_string_lossy().into_owned();
    Err(Error { status: Status::from_code(status), message })
}

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArgument, message)
}
