"""The CI-sized crash loop (tests/integration/crash_loop.py): 20 kill -9s of relaisd under
relais-bench load, plain and STARTTLS senders, nothing acknowledged may be lost."""

import unittest

from crash_loop import crash_loop


class CrashLoopTest(unittest.TestCase):
    def test_twenty_kills_lose_nothing(self):
        result = crash_loop(kills=20, messages=4000, connections=20, seed=20261127,
                            tls_connections=4)
        self.assertEqual(result["lost"], 0, result["lost_seqs"])
        self.assertGreater(result["acknowledged"], 1000)  # The kills landed on real traffic.
        self.assertEqual(result["delivered"], result["acknowledged"])
        self.assertGreater(result["tls_acknowledged"], 200)  # Mail over TLS was in the loop.


if __name__ == "__main__":
    unittest.main()
