"""Runs a unittest suite and writes one line per test: "<test id>\t<outcome>".

Used by scripts/drivers.sh to compare a driver's own test suite run directly against
PostgreSQL with the same suite run through switchyard. Outcomes: ok, fail, error, skip,
xfail, xpass; a failing subtest makes its test "fail". The file is written as tests end, so a
run cut short by a timeout still shows what ran.

Usage: python unittest_outcomes.py OUTFILE MODULE:CALLABLE
  (MODULE, imported from the current directory, has CALLABLE returning the suite, e.g.
  tests:test_suite)
"""

import importlib
import os
import sys
import unittest


class Recorder(unittest.TextTestResult):
    def __init__(self, out, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out
        self.outcome = {}

    def _set(self, test, outcome):
        # A test's worst outcome wins (a failing subtest after passing ones).
        rank = {"ok": 0, "skip": 0, "xfail": 0, "xpass": 1, "fail": 2, "error": 3}
        key = test.id()
        if rank[outcome] >= rank.get(self.outcome.get(key, "ok"), 0):
            self.outcome[key] = outcome

    def startTest(self, test):
        super().startTest(test)
        self.outcome[test.id()] = "ok"

    def stopTest(self, test):
        super().stopTest(test)
        key = test.id()
        self.out.write(f"{key}\t{self.outcome.pop(key, 'ok')}\n")
        self.out.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail")

    def addError(self, test, err):
        super().addError(test, err)
        # Errors in class or module fixtures come with a pseudo-test.
        if isinstance(test, unittest.case._SubTest):
            test = test.test_case
        if test.id() in self.outcome:
            self._set(test, "error")
        else:
            self.out.write(f"{test.id()}\terror\n")
            self.out.flush()

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failure = issubclass(err[0], test.failureException)
            self._set(test, "fail" if failure else "error")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "skip")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "xpass")


def main():
    outfile, target = sys.argv[1], sys.argv[2]
    module, _, attr = target.partition(":")
    sys.path.insert(0, os.getcwd())
    suite = getattr(importlib.import_module(module), attr)()
    with open(outfile, "w") as out:
        runner = unittest.TextTestRunner(
            verbosity=2,
            resultclass=lambda *a, **k: Recorder(out, *a, **k),
        )
        result = runner.run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
