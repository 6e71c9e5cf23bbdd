"""Start the BigQuery emulator (PyPI bqemulator) with this repository's patches
(deploy/dev/emulator), then its real CLI.

usage: python deploy/dev/bqemu.py start --rest-host 127.0.0.1 --rest-port P ...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import emulator  # noqa: E402

if __name__ == "__main__":
    emulator.install()
    from bqemulator import cli  # noqa: E402  (import after the patches on purpose)

    sys.exit(cli.main())
