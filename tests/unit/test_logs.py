"""``lxdlib.logs``: stdlib logging under ``lxdlib``, with ``logging`` imported only when a record
can go somewhere."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from lxdlib.logs import get_logger


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)


def test_unimported_logging_drops_debug_and_info_without_importing_it() -> None:
    r = _run("import sys\n"
             "from lxdlib.logs import get_logger\n"
             "log = get_logger('lxdlib.x')\n"
             "log.debug('d %s', 1); log.info('i')\n"
             "print(log.isEnabledFor(10), 'logging' in sys.modules)\n")
    assert r.stdout.split() == ["False", "False"] and r.stderr == ""


def test_a_warning_reaches_the_unconfigured_logging_as_the_stdlib_logger_would() -> None:
    # the stdlib's last resort prints WARNING and above to stderr when nothing is configured
    r = _run("from lxdlib.logs import get_logger\n"
             "get_logger('lxdlib.x').warning('careful %s', 'now')\n")
    assert r.stderr == "careful now\n"


def test_configured_logging_gets_every_record_with_the_callers_place(
        caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("lxdlib.test")
    with caplog.at_level(logging.DEBUG, logger="lxdlib"):
        log.debug("d %d", 1)
        log.info("i")
        log.warning("w")
        log.log(15, "between")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        assert log.isEnabledFor(logging.DEBUG)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("lxdlib.test", 10, "d 1"), ("lxdlib.test", 20, "i"), ("lxdlib.test", 30, "w"),
        ("lxdlib.test", 15, "between"), ("lxdlib.test", 40, "failed")]
    assert {r.funcName for r in caplog.records} == \
        {"test_configured_logging_gets_every_record_with_the_callers_place"}
    assert caplog.records[-1].exc_info is not None


def test_levels_set_on_the_stdlib_logger_apply(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("lxdlib.quiet")
    with caplog.at_level(logging.ERROR, logger="lxdlib.quiet"):
        log.warning("hidden")
        log.error("shown")
        assert not log.isEnabledFor(logging.WARNING)
    assert [r.getMessage() for r in caplog.records] == ["shown"]
