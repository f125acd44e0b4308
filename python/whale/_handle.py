"""_handle.py - ownership of libwhale handles from Python.

Each wrapper owns one C handle through ffi.gc, whose destructor also holds the handles of the
objects it depends on (a session: its graph, context, plan and communicator). Whatever order the
garbage collector drops the wrappers in, even inside a reference cycle, a handle is destroyed
before the handles it borrows: the dependency only lets go of them once its own destructor ran.
close() releases a handle at once, closing the objects that depend on it first.
"""
import weakref

from ._lib import ffi
from .errors import closed


class Handle:
    """Base of every object that owns a libwhale handle: ``close()`` releases it now (closing
    what depends on it first), ``with obj:`` closes it at the end of the block, and the garbage
    collector releases it otherwise."""

    _ptr = None
    _kind = "handle"
    _close_lock = None  # sessions and communicators: their context's lock

    def _own(self, ptr, destroy, parents=(), keep=()):
        """Take ownership of ptr, destroyed by destroy(ptr) after nothing uses it; parents are
        the Handles it borrows (kept alive until then), keep any other objects C points into."""
        hold = tuple(p._ptr for p in parents) + tuple(keep)

        def _destroy(p, _destroy=destroy, _hold=hold):
            _destroy(p)

        self._children = weakref.WeakSet()
        self._ptr = ffi.gc(ptr, _destroy)
        for p in parents:
            p._children.add(self)

    def _p(self):
        """The C handle, or StateError if closed."""
        p = self._ptr
        if p is None:
            raise closed(self._kind)
        return p

    @property
    def closed(self):
        """True after close() (of this object or of one it depends on)."""
        return self._ptr is None

    def close(self):
        """Release the C handle now, after closing every object that depends on it; using the
        object afterwards raises whale.StateError. Calling it again does nothing."""
        p = self._ptr
        if p is None:
            return
        for c in list(self._children):
            c.close()
        lock = self._close_lock
        if lock is None:
            self._ptr = None
            ffi.release(p)
            return
        with lock:  # not while another thread is inside a call on it (the GIL is released there)
            self._ptr = None
            ffi.release(p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
