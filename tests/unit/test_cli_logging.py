"""``--debug`` and ``--verbose`` send the library's log records to stderr; without them the
command configures nothing (the library itself never adds handlers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from lxdlib.cli.main import main


@pytest.fixture(autouse=True)
def clean_logger() -> Iterator[logging.Logger]:
    """Each test starts and ends with the ``lxdlib`` logger as the library leaves it."""
    logger = logging.getLogger("lxdlib")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
    logger.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """Run a command that needs no root, log from a library module, return what stderr got."""
    assert main([*flags, "completion", "bash"]) == 0
    log = logging.getLogger("lxdlib.some.module")
    log.debug("debug-line %d", 1)
    log.info("info-line %d", 2)
    return capsys.readouterr().err


def test_debug_shows_debug_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "--debug")
    assert "debug-line 1" in err and "info-line 2" in err
    assert "lxdlib.some.module" in err and "DEBUG" in err


def test_verbose_shows_info_only(capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "-v")
    assert "info-line 2" in err and "debug-line 1" not in err


def test_no_flag_configures_nothing(capsys: pytest.CaptureFixture[str],
                                    clean_logger: logging.Logger) -> None:
    before = list(clean_logger.handlers)
    err = run(capsys)
    assert "info-line" not in err and "debug-line" not in err
    assert clean_logger.handlers == before


def test_library_adds_no_handlers() -> None:
    # importing the library (and what the command imports) must leave logging alone
    import lxdlib.cli.main
    import lxdlib.host

    assert lxdlib.cli.main.main is main

    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("lxdlib") and isinstance(logger, logging.Logger):
            assert all(isinstance(h, logging.NullHandler) for h in logger.handlers), name
