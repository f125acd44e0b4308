"""setup.py - builds whale._whale (cffi, API mode) against an existing libwhale.

libwhale is looked for, first found wins:
  1. WHALE_INCLUDE_DIR and WHALE_LIB_DIR (the directories of whale.h and libwhale.so);
  2. WHALE_BUILD_DIR, a meson build directory of this source tree (whale.h from ../include);
  3. pkg-config libwhale (after `ninja -C build install`);
  4. ../include and ../build, the build directory scripts/build.sh makes.
The module records the library's directory as its run-time search path, so an installed package
finds libwhale without LD_LIBRARY_PATH.
"""
import os
import subprocess

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_INCLUDE = os.path.normpath(os.path.join(HERE, "..", "include"))


def _pkg_config():
    try:
        inc = subprocess.check_output(["pkg-config", "--variable=includedir", "libwhale"], text=True).strip()
        lib = subprocess.check_output(["pkg-config", "--variable=libdir", "libwhale"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return (inc, lib) if os.path.exists(os.path.join(inc, "whale.h")) else None


def find_libwhale():
    e = os.environ
    if e.get("WHALE_INCLUDE_DIR") and e.get("WHALE_LIB_DIR"):
        return e["WHALE_INCLUDE_DIR"], e["WHALE_LIB_DIR"]
    if e.get("WHALE_BUILD_DIR"):
        return SRC_INCLUDE, os.path.abspath(e["WHALE_BUILD_DIR"])
    found = _pkg_config()
    if found:
        return found
    build = os.path.normpath(os.path.join(HERE, "..", "build"))
    if os.path.exists(os.path.join(build, "libwhale.so")):
        return SRC_INCLUDE, build
    raise SystemExit("setup.py: libwhale not found: build it (bash scripts/build.sh) or set WHALE_BUILD_DIR, "
                     "or WHALE_INCLUDE_DIR and WHALE_LIB_DIR")


inc, lib = find_libwhale()
os.environ["WHALE_INCLUDE_DIR"], os.environ["WHALE_LIB_DIR"] = os.path.abspath(inc), os.path.abspath(lib)

setup(cffi_modules=["whale_build.py:ffibuilder"])
