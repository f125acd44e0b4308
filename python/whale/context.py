"""context.py - the libwhale context (thread pool, errors, logging) and the default one."""
import atexit
import logging
import threading
import weakref

from ._handle import Handle
from ._lib import cstr, ffi, lib
from .errors import make_error

logger = logging.getLogger("whale")
logger.addHandler(logging.NullHandler())  # a library prints nothing unless the host configures logging

_TO_PY = {lib.WH_LOG_ERROR: logging.ERROR, lib.WH_LOG_WARN: logging.WARNING,
          lib.WH_LOG_INFO: logging.INFO, lib.WH_LOG_DEBUG: logging.DEBUG}


def _to_c_level(level):
    if level >= logging.ERROR:
        return lib.WH_LOG_ERROR
    if level >= logging.WARNING:
        return lib.WH_LOG_WARN
    if level >= logging.INFO:
        return lib.WH_LOG_INFO
    return lib.WH_LOG_DEBUG


@ffi.def_extern()
def whpy_log(level, msg, user):
    # called by libwhale, possibly from its own threads (cffi takes the GIL); never raise into C
    try:
        ffi.from_handle(user).log(_TO_PY.get(level, logging.INFO), "%s", cstr(msg))
    except Exception:  # pragma: no cover - a broken handler must not break a training step
        pass


_live = []  # weak references to every open context, in creation order


class Context(Handle):
    """A libwhale context: its thread pool, its last error and its logging.

    ``threads``: CPU threads for kernels (0: all online cores). Messages go to the Python logger
    ``logger`` (default ``logging.getLogger("whale")``) at ``log_level`` (a logging level; default
    the logger's effective level when the context is made). Sessions and communicators of one
    context run one at a time: the context's lock serialises them across Python threads (the GIL
    itself is released while libwhale works). Close it last, or let the garbage collector do it;
    contexts still open at interpreter exit are closed then (finalising MPI if libwhale
    initialised it)."""

    _kind = "Context"

    def __init__(self, threads=0, log_level=None, logger=None):
        self.logger = logger if logger is not None else logging.getLogger("whale")
        if log_level is None:
            log_level = self.logger.getEffectiveLevel()
        opts = ffi.new("wh_ctx_options *", lib.whpy_wh_ctx_options_init())
        opts.num_threads = int(threads)
        self._log_handle = ffi.new_handle(self.logger)
        opts.log_fn = lib.whpy_log
        opts.log_user = self._log_handle
        opts.log_level = _to_c_level(log_level)
        out = ffi.new("wh_ctx **")
        st = lib.wh_ctx_create(out, opts)
        if st != lib.WH_OK:
            raise make_error(st, "wh_ctx_create failed")
        # the log handle lives as long as the C context that may call back with it
        self._own(out[0], lib.wh_ctx_destroy, keep=(self._log_handle,))
        self._lock = self._close_lock = threading.Lock()
        if len(_live) > 64:
            _live[:] = [r for r in _live if r() is not None]
        _live.append(weakref.ref(self))

    def error(self, status):
        """The exception for status, with the context's last error as its message (callers hold
        the context's lock around the failed call and this)."""
        return make_error(status, cstr(lib.wh_last_error(self._p())))

    def check(self, status):
        """Raise the exception for status unless it is WH_OK."""
        if status != lib.WH_OK:
            raise self.error(status)

    @property
    def last_error(self):
        """The detailed message of the last failure in this context ('' if none)."""
        return cstr(lib.wh_last_error(self._p()))

    @property
    def rank(self):
        """MPI rank seen by the context (0 without MPI)."""
        return lib.wh_ctx_rank(self._p())

    @property
    def size(self):
        """MPI world size seen by the context (1 without MPI)."""
        return lib.wh_ctx_size(self._p())

    @property
    def threads(self):
        """CPU threads of the context's pool."""
        return lib.wh_ctx_threads(self._p())

    def __repr__(self):
        if self.closed:
            return "<whale.Context closed>"
        return "<whale.Context rank %d of %d, %d threads>" % (self.rank, self.size, self.threads)


_default = None


def default_context():
    """The context used when none is given (made on first use: all cores, logging to 'whale')."""
    global _default
    if _default is None or _default.closed:
        _default = Context()
    return _default


@atexit.register
def _close_all():
    # newest first: a context made later may use MPI that an earlier one initialised
    for ref in reversed(_live):
        c = ref()
        if c is not None:
            c.close()
    _live.clear()
