"""Checks deploy/dev/emulator/farmhash.py's FARM_FINGERPRINT against FarmHash's published Fingerprint64
test vectors, short and long (the emulator's own pure-Python version fails past 64 bytes),
and against the emulator's version where that one is right (up to 64 bytes).
Run by `make test` (python -m unittest discover -s deploy/dev/emulator).
"""

import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emulator import farmhash as bqemu  # noqa: E402
from bqemulator.sql import builtin_udfs  # noqa: E402

# (unsigned Fingerprint64, input): FarmHash's reference values.
VECTORS = [
    (0x9AE16A3B2F90404F, ""),
    (0xB3454265B6DF75E3, "a"),
    (0xAD052244B781C4EB, "0123456789"),
    (0xD78D5F852D522E6A, "0123456789$0123456789!0"),
    (0x5A0A6EFD52E84E2A, "How can you write a big system without C++?  -Paul Glick"),
    (0x55182F8859ECA4CE, "For every action there is an equal and opposite government program."),
    (0x38AA3175B37F305C, "It's a tiny change to the code and not completely disgusting. - Bob Manchek"),
    (
        0x098EFF6958C5E91A,
        "The fugacity of a constituent in a mixture of gases at a given temperature is "
        "proportional to its mole fraction.  Lewis-Randall Rule",
    ),
]


def signed(unsigned):
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned


class FarmFingerprint(unittest.TestCase):
    def test_reference_vectors(self):
        for expected, text in VECTORS:
            with self.subTest(length=len(text)):
                self.assertEqual(bqemu.farm_fingerprint(text), signed(expected))

    def test_null_is_null(self):
        self.assertIsNone(bqemu.farm_fingerprint(None))

    def test_agrees_with_the_emulator_up_to_64_bytes(self):
        rng = random.Random(7)
        alphabet = 'abc\u00e9\u6f22\U0001F642\x00\x1f{}":,0123456789'
        for _ in range(5000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 17)))
            if len(text.encode("utf-8")) <= 64:
                self.assertEqual(
                    bqemu.farm_fingerprint(text), builtin_udfs.bqemu_farm_fingerprint(text), text
                )

    def test_patched_engine_computes_it_in_sql(self):
        import duckdb

        bqemu.install()
        connection = duckdb.connect()
        builtin_udfs.register_builtin_udfs(connection)
        connection.execute("CREATE TABLE t (i INTEGER, s VARCHAR)")
        connection.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(text for _, text in VECTORS)))
        query = "SELECT bqemu_farm_fingerprint(s) FROM t ORDER BY i"
        want = [signed(expected) for expected, _ in VECTORS]
        self.assertEqual([g for (g,) in connection.execute(query).fetchall()], want)
        # With a NULL in the vector (the other code path).
        connection.execute("INSERT INTO t VALUES (999, NULL)")
        self.assertEqual([g for (g,) in connection.execute(query).fetchall()], want + [None])


if __name__ == "__main__":
    unittest.main()
