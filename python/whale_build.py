"""whale_build.py - the cffi builder of whale._whale (API mode) from include/whale.h.

The declarations handed to cffi are read from the public header itself at build time (preprocessor
lines and export attributes dropped, integer macros turned into constants the compiler fills in),
so the binding cannot drift from the header: the C compiler checks every declaration, struct
layout and constant of the generated module against whale.h.

Used two ways:
  * setup.py (pip install ./python): cffi_modules = ["whale_build.py:ffibuilder"], compiled and
    linked against the libwhale found by setup.py;
  * the meson build: ``python3 whale_build.py --emit OUT.c --header include/whale.h`` writes the
    C source that meson compiles into build/python/whale/, next to copies of the package sources.
"""
import os
import re
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))

# Small helpers compiled into the extension (not into libwhale): each returns one of the header's
# initializer macros, so the Python defaults are the C defaults by construction.
HELPERS = """
#define WHPY_INIT(T, M) static T whpy_##T##_init(void) { T o = M; return o; }
WHPY_INIT(wh_ctx_options, WH_CTX_OPTIONS_INIT)
WHPY_INIT(wh_sgd_options, WH_SGD_OPTIONS_INIT)
WHPY_INIT(wh_adamw_options, WH_ADAMW_OPTIONS_INIT)
WHPY_INIT(wh_session_options, WH_SESSION_OPTIONS_INIT)
WHPY_INIT(wh_memory_stats, WH_MEMORY_STATS_INIT)
WHPY_INIT(wh_comm_options, WH_COMM_OPTIONS_INIT)
WHPY_INIT(wh_device_desc, WH_DEVICE_DESC_INIT)
WHPY_INIT(wh_plan_options, WH_PLAN_OPTIONS_INIT)
WHPY_INIT(wh_sim_result, WH_SIM_RESULT_INIT)
WHPY_INIT(wh_plan_layout, WH_PLAN_LAYOUT_INIT)
WHPY_INIT(wh_comm_stats, WH_COMM_STATS_INIT)
WHPY_INIT(wh_checkpoint_options, WH_CHECKPOINT_OPTIONS_INIT)
WHPY_INIT(wh_checkpoint_info, WH_CHECKPOINT_INFO_INIT)
"""
HELPER_TYPES = ["wh_ctx_options", "wh_sgd_options", "wh_adamw_options", "wh_session_options",
                "wh_memory_stats", "wh_comm_options", "wh_device_desc", "wh_plan_options",
                "wh_sim_result", "wh_plan_layout", "wh_comm_stats", "wh_checkpoint_options",
                "wh_checkpoint_info"]


def header_to_cdef(text):
    """The declarations of whale.h in the subset of C that cffi's cdef parses."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)   # comments (a '#' may sit in one)
    text = re.sub(r"\\\n", " ", text)                   # continued lines
    out, consts, cplusplus = [], [], 0
    for line in text.splitlines():
        s = line.strip()
        if cplusplus:  # the extern "C" braces live in #ifdef __cplusplus blocks: drop them whole
            cplusplus += s.startswith("#if")
            cplusplus -= s.startswith("#endif")
            continue
        if s.startswith("#"):
            if re.match(r"#\s*ifdef\s+__cplusplus", s):
                cplusplus = 1
                continue
            m = re.match(r"#\s*define\s+(WH_[A-Z0-9_]+)\s+(.+)$", s)
            # object-like integer macros become constants ("#define WH_BATCH ...": cffi asks the
            # compiler for the value); function-like and initializer macros stay in C
            if m and not m.group(2).lstrip().startswith("{") and m.group(1) != "WH_API":
                consts.append("#define %s ..." % m.group(1))
            continue
        out.append(line)
    body = re.sub(r"\bWH_API\s+", "", "\n".join(out))
    return "\n".join(consts) + "\n" + body


def make_builder(header):
    with open(header) as f:
        cdef = header_to_cdef(f.read())
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.cdef("\n".join("%s whpy_%s_init(void);" % (t, t) for t in HELPER_TYPES))
    # the log callback: libwhale calls it (from any of its threads; cffi takes the GIL) and it
    # hands the message to Python's logging
    ffi.cdef('extern "Python" void whpy_log(wh_log_level, const char *, void *);')
    return ffi


def _find_header():
    for cand in (os.environ.get("WHALE_INCLUDE_DIR"), os.path.join(HERE, "..", "include")):
        if cand and os.path.exists(os.path.join(cand, "whale.h")):
            return os.path.join(os.path.abspath(cand), "whale.h")
    raise SystemExit("whale_build.py: cannot find whale.h (set WHALE_INCLUDE_DIR)")


def setup_builder(include_dirs, library_dirs, runtime_library_dirs):
    """The builder setup.py compiles: linked against libwhale in library_dirs."""
    ffi = make_builder(os.path.join(include_dirs[0], "whale.h"))
    ffi.set_source("whale._whale", '#include "whale.h"\n' + HELPERS, libraries=["whale"],
                   include_dirs=include_dirs, library_dirs=library_dirs,
                   runtime_library_dirs=runtime_library_dirs)
    return ffi


if __name__ == "__main__" and "--emit" in sys.argv:
    args = sys.argv[1:]
    out = args[args.index("--emit") + 1]
    header = args[args.index("--header") + 1] if "--header" in args else _find_header()
    ffi = make_builder(header)
    ffi.set_source("whale._whale", '#include "whale.h"\n' + HELPERS)
    ffi.emit_c_code(out)
else:
    # cffi_modules entry for setup.py: the locations come from setup.py through the environment
    _inc = os.environ.get("WHALE_INCLUDE_DIR")
    _lib = os.environ.get("WHALE_LIB_DIR")
    if _inc and _lib:
        ffibuilder = setup_builder([_inc], [_lib], [_lib])
