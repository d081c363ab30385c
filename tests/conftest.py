"""Test configuration: hypothesis profiles and the --thorough flag.

CI runs the ``ci`` profile (few examples, derandomised).  ``pytest --thorough``
selects the ``thorough`` profile and also runs tests marked ``slow``.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Without a GPU the Triton kernels run in Triton's interpreter (numpy on CPU tensors).  Triton reads
# the variable when a kernel is decorated, i.e. when sdekit.kernels is first imported, so it is set
# here, before any test module imports sdekit.  With a GPU the kernels are compiled and run on it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pytest_addoption(parser):
    parser.addoption("--thorough", action="store_true", help="many hypothesis examples and the slow tests")


def pytest_configure(config):
    thorough = config.getoption("--thorough") or os.environ.get("SDEKIT_THOROUGH") == "1"
    settings.load_profile("thorough" if thorough else "ci")
    # One intra-op thread: the suite's tensors are small, and on a busy 2-core machine
    # several threads make small element-wise ops ~100x slower.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--thorough") or os.environ.get("SDEKIT_THOROUGH") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --thorough")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
