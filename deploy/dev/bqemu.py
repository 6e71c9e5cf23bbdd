"""Start the BigQuery emulator (PyPI bqemulator) offline.

bqemulator downloads DuckDB's `spatial` extension at start, which fails without internet.
We replace that step with a no-op (GEOGRAPHY is then unavailable) and call the real CLI.
Usage: python bqemu.py start --rest-host 127.0.0.1 --rest-port P ...
"""

import sys

from bqemulator.storage import engine

engine.DuckDBEngine._load_spatial = lambda self: None  # offline: no spatial extension

from bqemulator import cli  # noqa: E402  (import after the patch on purpose)

sys.exit(cli.main())
