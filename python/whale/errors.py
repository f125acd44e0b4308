"""errors.py - whale.Error and one subclass per wh_status, carrying libwhale's message."""
import builtins

from ._lib import cstr, lib


class Error(Exception):
    """A libwhale call failed. ``status`` is the wh_status code (an int), ``status_name`` its
    static text (wh_status_str) and ``message`` the detail libwhale gave (wh_last_error or
    wh_graph_error): what failed, where, with which shapes, ranks or files."""

    status = None

    def __init__(self, message, status=None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__(message)

    @property
    def status_name(self):
        """wh_status_str of the status: a short static description."""
        return cstr(lib.wh_status_str(self.status)) if self.status is not None else "error"


class InvalidArgumentError(Error, ValueError):
    """WH_ERR_INVALID_ARGUMENT: a NULL or closed handle, an out-of-range number, an unknown enum,
    or an argument of the wrong kind (e.g. a non-contiguous array)."""
    status = lib.WH_ERR_INVALID_ARGUMENT


class ShapeError(Error, ValueError):
    """WH_ERR_SHAPE: shapes do not fit an op, or a buffer has the wrong size."""
    status = lib.WH_ERR_SHAPE


class DtypeError(Error, TypeError):
    """WH_ERR_DTYPE: dtypes do not fit an op, or an array has the wrong dtype."""
    status = lib.WH_ERR_DTYPE


class PoisonedError(Error):
    """WH_ERR_POISONED: the graph holds an earlier error (the message repeats it)."""
    status = lib.WH_ERR_POISONED


class StateError(Error):
    """WH_ERR_STATE: the call does not fit the object's state (an input not fed, a value not
    kept, a frozen graph, a closed handle)."""
    status = lib.WH_ERR_STATE


class OutOfMemoryError(Error, MemoryError):
    """WH_ERR_OUT_OF_MEMORY."""
    status = lib.WH_ERR_OUT_OF_MEMORY


class FileError(Error, OSError):
    """WH_ERR_IO: a file could not be opened, read or written."""
    status = lib.WH_ERR_IO

    def __init__(self, message, status=None):  # OSError's (errno, strerror) form is not used
        Error.__init__(self, message, status)

    def __str__(self):
        return self.message


class CorruptError(Error, ValueError):
    """WH_ERR_CORRUPT: a file or buffer is not a valid libwhale artefact."""
    status = lib.WH_ERR_CORRUPT


class UnsupportedError(Error, NotImplementedError):
    """WH_ERR_UNSUPPORTED: valid, but not implemented by this build."""
    status = lib.WH_ERR_UNSUPPORTED


class NotFoundError(Error, LookupError):
    """WH_ERR_NOT_FOUND: no value with that name or handle."""
    status = lib.WH_ERR_NOT_FOUND


class CommError(Error):
    """WH_ERR_COMM: a communication engine (MPI, NCCL) failed; the message has its text."""
    status = lib.WH_ERR_COMM


class CommTimeoutError(Error, builtins.TimeoutError):
    """WH_ERR_TIMEOUT: a wait passed its deadline; the message names the op, the bytes, the time
    waited and the ranks that did not answer."""
    status = lib.WH_ERR_TIMEOUT

    def __init__(self, message, status=None):
        Error.__init__(self, message, status)

    def __str__(self):
        return self.message


class InternalError(Error):
    """WH_ERR_INTERNAL: a bug in libwhale; please report the message."""
    status = lib.WH_ERR_INTERNAL


_BY_STATUS = {c.status: c for c in (
    InvalidArgumentError, ShapeError, DtypeError, PoisonedError, StateError, OutOfMemoryError,
    FileError, CorruptError, UnsupportedError, NotFoundError, CommError, CommTimeoutError,
    InternalError)}


def error_class(status):
    """The Error subclass for a wh_status code (Error itself for an unknown code)."""
    return _BY_STATUS.get(status, Error)


def make_error(status, message):
    """An exception for a failed call: its class follows the status, its text is message (or the
    status text when libwhale left none)."""
    if not message:
        message = cstr(lib.wh_status_str(status))
    err = error_class(status)(message)
    if type(err) is Error:
        err.status = status
    return err


def closed(what):
    """The error raised when a closed (freed) handle is used."""
    return StateError("%s is closed: it was released with close() (or its context was)" % what)
