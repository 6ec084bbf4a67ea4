"""idmap (raw.idmap, isolated allocation) and image templates: pure parts."""

from __future__ import annotations

import pytest

from lxdlib import idmap, templates
from lxdlib.errors import ImageError, InvalidConfig, LxdlibError
from lxdlib.idmap import IdRange


def test_instance_map_plain() -> None:
    assert idmap.instance_map(1000000, 65536) == [IdRange("g", 0, 1000000, 65536),
                                                  IdRange("u", 0, 1000000, 65536)]


def test_raw_idmap_punches_a_hole() -> None:
    m = idmap.instance_map(1000000, 65536, "both 1000 1000")
    u = [r for r in m if r.kind == "u"]
    assert u == [IdRange("u", 0, 1000000, 1000), IdRange("u", 1000, 1000, 1),
                 IdRange("u", 1001, 1001001, 64535)]


def test_host_root_is_the_uid_container_root_runs_as() -> None:
    assert idmap.host_root(idmap.instance_map(1000000, 65536)) == 1000000
    assert idmap.host_root(idmap.instance_map(1065536, 65536, "both 1000 0")) == 1000
    assert idmap.host_root(idmap.instance_map(1000000, 65536, "uid 5 1")) == 1000000
    assert idmap.host_root([]) == 0  # privileged


def test_raw_idmap_ranges_and_kinds() -> None:
    assert idmap.parse_raw_idmap("uid 5000-5009 100-109\n\ngid 7 7") == [
        IdRange("u", 100, 5000, 10), IdRange("g", 7, 7, 1)]


@pytest.mark.parametrize("text", ["both 1", "all 1 1", "uid a b", "uid 1-3 1-2"])
def test_raw_idmap_invalid(text: str) -> None:
    with pytest.raises(InvalidConfig):
        idmap.parse_raw_idmap(text)


def test_isolated_allocation_finds_gaps() -> None:
    alloc = idmap.Allocation(1000000, 10 * 65536)
    assert idmap.allocate_isolated(alloc, 65536, {}) == 1000000 + 65536
    used = {"a": (1000000 + 65536, 65536), "b": (1000000 + 3 * 65536, 65536)}
    assert idmap.allocate_isolated(alloc, 65536, used) == 1000000 + 2 * 65536
    assert idmap.allocate_isolated(alloc, 2 * 65536, used) == 1000000 + 4 * 65536
    with pytest.raises(LxdlibError, match="Not enough"):
        idmap.allocate_isolated(alloc, 10 * 65536, used)


@pytest.mark.parametrize(("text", "out"), [
    ("{{ container.name }}\n", "web\n"),
    ("{{ instance.name|upper }}", "WEB"),
    ('{{ config_get("user.x", "dflt") }}', "dflt"),
    ('{{ config_get("limits.cpu") }}', "2"),
    ("{{ properties.k }}", "v"),
    ("{% if config.missing %}yes{% else %}no{% endif %}", "no"),
    ("{% if container.name %}a{% if trigger %}b{% endif %}{% endif %}", "ab"),
    ("{{ missing|default:'x' }}", "x"),
    ("plain", "plain"),
])
def test_template_render(text: str, out: str) -> None:
    ctx = {"container": {"name": "web"}, "instance": {"name": "web"},
           "config": {"limits.cpu": "2"}, "properties": {"k": "v"}, "trigger": "create"}
    assert templates.render(text, ctx) == out


@pytest.mark.parametrize("text", ["{% include '/etc/passwd' %}", "{% if x %}", "{% endif %}",
                                  "{{ x|evil }}"])
def test_template_refuses_unsupported(text: str) -> None:
    with pytest.raises(ImageError):
        templates.render(text, {})
