"""pytest-benchmark plumbing shared by the suites (``benchmarks/suite_*.py``), run by ``benchmarks/run.py``.

Every measurement goes through the ``measure`` fixture, which times one
implementation of one case with ``benchmark.pedantic`` and files it under a
group ``"<suite>: <case>"`` with its metrics (NFE, error, ...) in
``extra_info``; ``run.py`` turns the JSON into ratio tables and plots through
each suite's ``summarize``.  ``--quick`` selects tiny sizes (CI runs it so the
suites never rot; its numbers mean nothing).
"""

from __future__ import annotations

import math

import pytest


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="tiny sizes: check the suites run, not the numbers")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    """True under ``--quick``."""
    return bool(request.config.getoption("--quick"))


@pytest.fixture
def measure(benchmark, quick):
    """``measure(fn, suite=, case=, impl=, baseline=False, rounds=None, **info) -> fn's metrics``.

    ``fn()`` runs the work once and returns a dict of JSON-able metrics (``nfe``,
    ``error``, ...), which are stored with ``info`` in ``extra_info``.  The
    timing is ``rounds`` calls after one warm-up call (``rounds`` defaults to 3,
    1 under ``--quick``).  ``baseline=True`` marks the implementation the
    suite's ratios are taken against.  ``warmup=False`` skips the warm-up call
    (for baselines that take many seconds per call and have nothing to warm up).
    """

    def run(fn, *, suite: str, case: str, impl: str, baseline: bool = False, rounds: int | None = None,
            warmup: bool = True, **info):
        rounds = 1 if quick else (rounds or 3)
        benchmark.group = f"{suite}: {case}"
        metrics = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if quick or not warmup else 1)
        metrics = dict(metrics or {})
        for key, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise AssertionError(f"{suite}/{case}/{impl}: metric {key} is not finite ({value})")
        benchmark.extra_info.update(suite=suite, case=case, impl=impl, baseline=baseline, **info, **metrics)
        return metrics

    return run
