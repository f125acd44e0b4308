"""run_pytest.py FILE - one meson test per pytest file: runs FILE's tests verbosely (each test's
name and result in the log), exits 77 (meson's skip) when pytest is missing, else pytest's
status (a file that collects no test fails)."""
import sys

try:
    import pytest
except ImportError:
    print("skipped: pytest is not installed (Debian package python3-pytest; scripts/deps.sh test installs it)")
    sys.exit(77)

sys.exit(pytest.main(["-v", "-rs", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--tb=short", "-o", "console_output_style=classic",
                      sys.argv[1]] + sys.argv[2:]))
