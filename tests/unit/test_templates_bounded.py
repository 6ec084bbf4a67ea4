"""A hostile image's templates cannot exhaust the memory of the process starting the instance,
nor hang it (docs/security.md, section 9): the templates that need Jinja2 render in one forked
child bounded in memory and time (``jinjasandbox.render_bounded``); those of text and names
alone render here, without a fork. Real renders, no mocks: each hostile template below would
allocate a gigabyte or loop for hours in the process that rendered it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lxdlib import templates
from lxdlib.errors import TemplateError
from tests.unit.template_volumes import template_volume

# the child's bounds (jinjasandbox.DEADLINE, MAX_MEMORY), as literals: these tests must also
# run, and fail, against code that has none
DEADLINE = 5.0
GIB = 1 << 30

_FORKS: list[int] = []
os.register_at_fork(before=lambda: _FORKS.append(os.getpid()))


def _rss_mib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def _children() -> set[int]:
    """This process's children, as the kernel lists them (every thread's). A thread that ends
    between the listing and the read (one just joined: ``join`` returns before the kernel has
    let the thread go) is skipped: its children, if any, went to another of the process's
    threads, which is read too."""
    out: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                out.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    return out


HOSTILE_MEMORY = {
    # a string doubled by `set`: 2**30 characters from a template of a few hundred bytes
    "doubling": "{% set a = 'x' %}" + "{% set a = a ~ a %}" * 30 + "{{ a|length }}",
    "doubling-macro": ("{% macro d(a, n) %}{% if n %}{{ d(a ~ a, n - 1) }}{% else %}"
                       "{{ a|length }}{% endif %}{% endmacro %}{{ d('x', 30) }}"),
    "ljust": f"{{{{ 'x'.ljust({GIB})|length }}}}",
    "format": f"{{{{ '{{:>{GIB}}}'.format('x')|length }}}}",
    "expandtabs": f"{{{{ '\t'.expandtabs({GIB})|length }}}}",
}


@pytest.mark.parametrize("text", HOSTILE_MEMORY.values(), ids=HOSTILE_MEMORY.keys())
def test_memory_of_a_template_is_bounded(text: str) -> None:
    """Each would take 1-1.5 GiB here; it fails in the child instead, within the deadline,
    naming the template, and this process's memory stays where it was, no child left."""
    before, children = _rss_mib(), _children()
    start = time.monotonic()
    with pytest.raises(TemplateError, match=r"template 'evil\.tpl' exceeded the memory"):
        templates.render(text, {}, name="evil.tpl")
    assert time.monotonic() - start < DEADLINE
    assert _rss_mib() - before < 64
    assert _children() <= children


def test_time_of_a_template_is_bounded() -> None:
    """Three nested loops over 100,000 items (10**15 turns) end at the deadline with an error
    naming the template; the child is killed and reaped. Rendered from a second thread (the
    API may be called from threads: the fork then copies only that one), which also keeps this
    test from hanging where nothing bounds the loop."""
    text = "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}"
    children = _children()
    got: list[BaseException | str] = []

    def run() -> None:
        try:
            got.append(templates.render(text, {"x": list(range(100_000))}, name="loop.tpl"))
        except BaseException as e:  # whatever it is, the assertion below shows it
            got.append(e)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE + 10)
    assert not thread.is_alive(), "the render was not stopped"
    assert time.monotonic() - start < DEADLINE + 3
    assert len(got) == 1 and isinstance(got[0], TemplateError), got
    assert "template 'loop.tpl' exceeded the time allowed" in str(got[0])
    assert _children() <= children


def _apply(vol: Path, targets: dict[str, str], ctx: dict[str, Any]) -> list[str]:
    meta = {"templates": {t: {"when": ["start"], "template": n} for t, n in targets.items()}}
    return templates.apply(vol, meta, "start", ctx, os.getuid(), os.getgid())


def test_one_fork_per_apply_and_none_for_names_alone(tmp_path: Path) -> None:
    """The templates of text and names alone render in this process (no fork: they cost what
    they did); those that need Jinja2 render all in one child per ``apply``."""
    vol = template_volume(tmp_path, {"hostname.tpl": "{{ container.name }}\n",
                             "hosts.tpl": "127.0.1.1 {{ container.name }}{% if 1 %} x{% endif %}\n",
                             "motd.tpl": "{{ container.name|upper }}\n"})
    ctx = {"container": {"name": "web"}}
    _FORKS.clear()
    assert _apply(vol, {"/etc/hostname": "hostname.tpl"}, ctx) == ["/etc/hostname"]
    assert templates.render("{{ container.name }}", ctx) == "web"
    assert _FORKS == []
    assert _apply(vol, {"/etc/hostname": "hostname.tpl", "/etc/hosts": "hosts.tpl",
                        "/etc/motd": "motd.tpl"}, ctx) == ["/etc/hostname", "/etc/hosts",
                                                           "/etc/motd"]
    assert [os.getpid()] == _FORKS  # one fork, from here
    etc = vol / "rootfs" / "etc"
    assert [(etc / n).read_text() for n in ("hostname", "hosts", "motd")] == \
        ["web\n", "127.0.1.1 web x\n", "WEB\n"]


def test_a_failing_template_writes_none_of_the_others(tmp_path: Path) -> None:
    """All of one ``apply`` is rendered before anything is written: a template beyond a limit
    leaves the files of the others (rendered first, by name) as they were."""
    vol = template_volume(tmp_path, {"a.tpl": "{% if 1 %}new{% endif %}\n",
                             "b.tpl": HOSTILE_MEMORY["ljust"]})
    (vol / "rootfs" / "etc" / "a").write_text("old\n")
    with pytest.raises(TemplateError, match=r"template 'b\.tpl' exceeded the memory"):
        _apply(vol, {"/etc/a": "a.tpl", "/etc/b": "b.tpl"}, {})
    assert (vol / "rootfs" / "etc" / "a").read_text() == "old\n"
    assert not (vol / "rootfs" / "etc" / "b").exists()
