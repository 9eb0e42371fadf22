"""The pytest plugin behind ``pytest --pyargs oodbench.testing --detector NAME``: the option, and
the contract cases parametrised over the names given (every registered detector when none is).

An installed oodbench registers it through the ``pytest11`` entry point under this module's name;
where that is missing (a source checkout on PYTHONPATH), ``-p oodbench.testing.plugin`` loads it.
"""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption("--detector", action="append", default=[], metavar="NAME",
                     help="oodbench detector to check against the contract (repeatable; "
                     "default: every registered one)")


def pytest_generate_tests(metafunc) -> None:
    if "detector_name" in metafunc.fixturenames:
        names = metafunc.config.getoption("detector")
        if not names:
            from oodbench.registry import DETECTORS

            names = DETECTORS.names()
        metafunc.parametrize("detector_name", names)
