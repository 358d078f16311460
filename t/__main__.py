"""`python3 t [-v] [-q] [-f] [NAME ...]`: run the nginx-python test suite.

The last line printed is "N passed, N failed, N skipped"; the exit status is
non-zero when anything failed. See harness.py for the environment variables.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

harness.main_all()
