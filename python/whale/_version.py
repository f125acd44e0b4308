VERSION = "0.1.0"  # the package version, kept equal to libwhale's (tests/python/test_install.py checks)
