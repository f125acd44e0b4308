"""_lib.py - loads the compiled cffi module (whale._whale) and exposes its ffi and lib.

The module is built in API mode against include/whale.h: by meson into build/python/whale/ (use
PYTHONPATH=build/python), or by ``pip install ./python``.
"""
import os
import sys

_flags = sys.getdlopenflags()
# libwhale links Open MPI, whose plugins (loaded later with dlopen) resolve libmpi's symbols
# through the global scope, as they do in a C program: load the module and its libraries global.
sys.setdlopenflags(_flags | os.RTLD_GLOBAL)
try:
    from . import _whale
except ImportError as e:  # pragma: no cover - a build problem, reported with what to do
    raise ImportError(
        "whale: the compiled module whale._whale cannot be imported (%s). Build libwhale "
        "(meson setup build && ninja -C build) and put build/python on PYTHONPATH, or install "
        "the package with pip install ./python" % e) from e
finally:
    sys.setdlopenflags(_flags)

ffi = _whale.ffi
lib = _whale.lib


def cstr(p):
    """A C string (const char *) as a Python str; NULL gives ''."""
    return ffi.string(p).decode("utf-8", "replace") if p != ffi.NULL else ""


def take_str(pp):
    """The string libwhale allocated into *pp, as a str, freed with wh_free."""
    try:
        return cstr(pp[0])
    finally:
        lib.wh_free(pp[0])
