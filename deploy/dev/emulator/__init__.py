"""Patches that make the BigQuery emulator (PyPI bqemulator) faithful where the syncs depend on
it. Each module follows BigQuery's documented behaviour, has an `install()` that monkeypatches
bqemulator before its app starts, and is tested by the `test_<module>.py` beside it
(`make test` runs them all: python -m unittest discover -s deploy/dev/emulator).

- farmhash: offline start (no spatial extension download) and FARM_FINGERPRINT as BigQuery
  computes it (FarmHash Fingerprint64, vectorised).
- history: what the sync reads about change: `last_modified_time` per table and per partition,
  partition ids as BigQuery assigns them (`__UNPARTITIONED__`, the streaming buffer),
  time travel (`FOR SYSTEM_TIME AS OF`), change history (`APPENDS`, `CHANGES`).
- dryrun: `dryRun` query jobs answer `totalBytesProcessed`.
- faults: a control endpoint that makes the next N matching requests fail as BigQuery does.

docs/emulator.md describes each patch and how tests drive it.
"""

import importlib

MODULES = ("farmhash", "history", "dryrun", "faults")


def install():
    """Applies every patch (call before bqemulator's app is built)."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").install()
