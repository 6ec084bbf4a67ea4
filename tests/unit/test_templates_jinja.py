"""Image templates rendered as LXD renders them (pongo2 semantics on Jinja2's sandbox).

The real templates are in ``data/templates/`` as distrobuilder writes them into images; the
expected outputs below were worked out by hand from pongo2's rules (whitespace control, trimmed
``config_get`` values), not produced by the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib import templates
from lxdlib.errors import ImageError, TemplateError
from tests.unit.template_volumes import template_volume

DATA = Path(__file__).parent / "data" / "templates"
META = yaml.safe_load((DATA / "metadata.yaml").read_text())
CLOUD_DEFAULT = "#cloud-config\n{}"

NET_DEFAULT = """\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: dhcp
        control: auto
"""

NET_CUSTOM = """\
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - type: {mode}
        control: auto
      - type: dhcp6
        control: auto
"""

HOSTS = ("127.0.1.1\tweb\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
         "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n")


def context(config: dict[str, str] | None = None, *, vm: bool = False,
            properties: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``apply`` gives ``render``: LXD's context, strings throughout."""
    inst = {"name": "web", "architecture": "x86_64", "privileged": "false",
            "ephemeral": "false", "type": "virtual-machine" if vm else "container"}
    return {"trigger": "create", "path": "/etc/x", "container": inst, "instance": inst,
            "config": config or {}, "devices": {}, "properties": properties or {}}


REAL: list[tuple[str, dict[str, str], bool, str]] = [
    ("hostname.tpl", {}, False, "web\n"),
    ("hosts.tpl", {}, False, HOSTS),
    ("cloud-init-meta.tpl", {}, False, "instance-id: web\nlocal-hostname: web\n\n"),
    ("cloud-init-meta.tpl", {"user.meta-data": "zone: a\n"}, False,
     "instance-id: web\nlocal-hostname: web\nzone: a\n"),
    ("cloud-init-user.tpl", {}, False, "#cloud-config\n{}\n"),
    # LXD trims the value's trailing newlines: no blank line at the end
    ("cloud-init-user.tpl", {"user.user-data": "#cloud-config\npackages: [htop]\n\n"}, False,
     "#cloud-config\npackages: [htop]\n"),
    ("cloud-init-user.tpl", {"cloud-init.user-data": "#cloud-config\nx: 1\r\n"}, False,
     "#cloud-config\nx: 1\n"),
    ("cloud-init-user.tpl", {"cloud-init.user-data": "#cloud-config\nnew: 1",
                             "user.user-data": "#cloud-config\nold: 1"}, False,
     "#cloud-config\nnew: 1\n"),
    ("cloud-init-vendor.tpl", {}, False, "#cloud-config\n{}\n"),
    ("cloud-init-vendor.tpl", {"user.vendor-data": "#cloud-config\nv: 1"}, False,
     "#cloud-config\nv: 1\n"),
    ("cloud-init-vendor.tpl", {"user.user-data": "#cloud-config\nnot: me"}, False,
     "#cloud-config\n{}\n"),
    ("cloud-init-network.tpl", {}, False, NET_DEFAULT),
    ("cloud-init-network.tpl", {}, True, NET_DEFAULT.replace("eth0", "enp5s0")),
    ("cloud-init-network.tpl", {"user.network-config": "version: 2\n"}, False, "version: 2\n"),
    ("cloud-init-network.tpl", {"user.network-config": "version: 2\n",
                                "cloud-init.network-config": "version: 1\nconfig: []\n"},
     False, "version: 1\nconfig: []\n"),
    ("cloud-init-network-custom.tpl", {}, False, NET_CUSTOM.format(mode="dhcp")),
    ("cloud-init-network-custom.tpl", {"user.network_mode": "link-local"}, False,
     NET_CUSTOM.format(mode="manual")),
    ("cloud-init-network-custom.tpl", {"user.network-config": "version: 2"}, False,
     "version: 2\n"),
]


@pytest.mark.parametrize(("name", "config", "vm", "out"), REAL)
def test_real_templates(name: str, config: dict[str, str], vm: bool, out: str) -> None:
    target = next(t for t, s in META["templates"].items() if s["template"] == name) \
        if name != "cloud-init-network-custom.tpl" else "/x"
    props = META["templates"].get(target, {}).get("properties") or {}
    text = (DATA / name).read_text()
    assert templates.render(text, context(config, vm=vm, properties=props), name=name) == out


def test_real_user_data_default_is_the_property() -> None:
    assert META["templates"]["/var/lib/cloud/seed/nocloud-net/user-data"]["properties"] == \
        {"default": CLOUD_DEFAULT}


SEMANTICS: list[tuple[str, dict[str, Any], str]] = [
    # what the hand-written renderer got wrong
    ('{% if config_get("user.x", "") == "" %}unset{% else %}set{% endif %}', {}, "unset"),
    ('{% if config_get("user.x", "") == "" %}unset{% else %}set{% endif %}',
     {"config": {"user.x": "1"}}, "set"),
    ("a\n{%- if true -%}\n  b  \n{%- endif -%}\nc", {}, "abc"),
    ("{%- if x -%} x {%- else -%} y {%- endif -%}\n", {}, "y"),
    # operators
    ('{% if a == "1" and b != "2" %}T{% endif %}', {"a": "1", "b": "3"}, "T"),
    ('{% if a == "1" or not b %}T{% endif %}', {"a": "0", "b": ""}, "T"),
    ('{% if a == "1" && b <> "2" %}T{% endif %}', {"a": "1", "b": "3"}, "T"),
    ('{% if a == "0" || !b %}T{% endif %}', {"a": "1", "b": ""}, "T"),
    ("{% if a %}1{% elif b %}2{% else %}3{% endif %}", {"b": "x"}, "2"),
    # pongo2 filter arguments, translated; strings holding look-alikes are not touched
    ('{{ x|default:"y" }}', {}, "y"),
    ("{{ x|default:'y' }}", {"x": ""}, "y"),
    ('{{ x|default:"y" }}', {"x": "v"}, "v"),
    ('{{ x | default : "y" }}', {}, "y"),
    ("{{ x|default:other.name }}", {"other": {"name": "o"}}, "o"),
    ("{{ x|default:3 }}", {}, "3"),
    ('{{ x|default:"a|b:c"|upper }}', {}, "A|B:C"),
    ('{{ "a|lower:x && b" }}', {}, "a|lower:x && b"),
    ('{{ x|default_if_none:"n" }}', {"x": None}, "n"),
    ('{{ x|default_if_none:"n" }}', {"x": ""}, ""),
    ('{{ x|join:", " }}', {"x": ["a", "b"]}, "a, b"),
    ('{{ x|cut:"-" }}', {"x": "a-b-c"}, "abc"),
    ('{{ x|add:"2" }}', {"x": "1"}, "12"),
    ("{{ x|add:2 }}", {"x": 1}, "3"),
    ('{{ x|yesno:"on,off" }}', {"x": ""}, "off"),
    ("{{ x|capfirst }}", {"x": "web"}, "Web"),
    ("{{ x|length }}", {"x": "abc"}, "3"),
    ("{{ x|truncatechars:5 }}", {"x": "abcdefgh"}, "ab..."),
    ("{{ x|integer|add:1 }}", {"x": "41"}, "42"),
    # undefined and nil render as nothing, as pongo2 renders nil
    ("[{{ missing }}][{{ missing.deeper.still }}][{{ none }}]", {"none": None}, "[][][]"),
    ('{{ config_get("user.unset") }}|{{ config_get("user.unset", properties.nope) }}', {}, "|"),
    ("{% if properties.default == properties.default %}eq{% endif %}", {}, "eq"),
    # no HTML escaping, trailing newline kept
    ('{{ x }}\n', {"x": "<a & 'b'>"}, "<a & 'b'>\n"),
    ("{% for k in xs %}{{ k }};{% endfor %}", {"xs": ["a", "b"]}, "a;b;"),
    ("{{ devices.eth0.type }}", {"devices": {"eth0": {"type": "nic"}}}, "nic"),
    ("{# pongo2 comment with {{ braces }} #}x", {}, "x"),
]


@pytest.mark.parametrize(("text", "ctx", "out"), SEMANTICS)
def test_pongo2_semantics(text: str, ctx: dict[str, Any], out: str) -> None:
    assert templates.render(text, ctx) == out


HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ config.__init__.__globals__ }}",
    "{{ config_get.__globals__['os'] }}",
    "{{ config_get.__code__ }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ x|attr('__class__') }}",
    "{{ ''.__class__|default:'' }}",
    "{{ config.update({'limits.cpu': '64'}) }}",
    "{{ config.pop('user.x') }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{% import '/etc/passwd' as p %}",
    "{% extends '/etc/passwd' %}",
    "{{ range(10) }}",
    "{{ lipsum() }}",
    "{{ 'x' * 1000000000 }}",
    "{{ 1000000000 * 'x' }}",
    "{{ 10 ** 100000000 }}",
    "{{ (10 ** 1000) ** 1000 }}",
    "{{ '%999999999s' % 1 }}",
    "{{ 'a'|format(1) }}",
    "{{ x|evil }}",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_sandbox_refuses(text: str) -> None:
    ctx = context({"user.x": "1"})
    with pytest.raises(TemplateError):
        templates.render(text, ctx)
    assert ctx["config"] == {"user.x": "1"}


def test_sandbox_cannot_read_host_files(tmp_path: Path) -> None:
    """Nothing in the output comes from /etc/passwd, whatever the template tries."""
    secret = Path("/etc/passwd").read_text().splitlines()[0]
    for text in ("{% include '/etc/passwd' %}", "{% include 'passwd' %}",
                 "{{ config_get('/etc/passwd') }}", "{{ '/etc/passwd'|default:'' }}"):
        try:
            out = templates.render(text, {}, templates_dir=tmp_path)
        except TemplateError:
            continue
        assert secret not in out


@pytest.mark.parametrize(("text", "line", "what"), [
    ("ok\nok\n{% if x %}\nnever closed\n", 3, "endif"),
    ("a\nb\n{{ x|nosuch }}\n", 3, "nosuch"),
    ("a\n{{ ''.__class__ }}\n", 2, "__class__"),
    ("a\nb\n{{ x|default:'' }}\n{{ missing() }}\n", 4, "missing"),
    ("{{ 1 // 0 }}", 1, "division"),
    ("a\n{{ 1 +  }}", 2, ""),
])
def test_errors_name_template_and_line(text: str, line: int, what: str) -> None:
    with pytest.raises(TemplateError) as e:
        templates.render(text, {}, name="hosts.tpl")
    assert isinstance(e.value, ImageError)
    msg = str(e.value)
    assert msg.startswith(f"template 'hosts.tpl', line {line}:"), msg
    assert what in msg


def _inst_ctx(config: dict[str, str]) -> dict[str, Any]:
    inst = {"name": "web", "architecture": "x86_64", "privileged": True, "ephemeral": False,
            "type": "container"}
    return {"container": inst, "instance": inst, "config": config, "devices": {}}


def test_apply_real_image(tmp_path: Path) -> None:
    """The whole templates section of a distrobuilder image, through ``apply``."""
    vol = template_volume(tmp_path, {p.name: p.read_text() for p in DATA.glob("*.tpl")})
    ctx = _inst_ctx({"user.user-data": "#cloud-config\nhostname: web\n"})
    written = templates.apply(vol, META, "create", ctx, os.getuid(), os.getgid())
    assert sorted(written) == sorted(META["templates"])
    root = vol / "rootfs"
    assert (root / "etc/hostname").read_text() == "web\n"
    assert (root / "etc/hosts").read_text() == HOSTS
    seed = root / "var/lib/cloud/seed/nocloud-net"
    assert (seed / "user-data").read_text() == "#cloud-config\nhostname: web\n"
    assert (seed / "vendor-data").read_text() == "#cloud-config\n{}\n"
    assert (seed / "network-config").read_text() == NET_DEFAULT
    assert (seed / "meta-data").read_text() == "instance-id: web\nlocal-hostname: web\n\n"
    assert templates.apply(vol, META, "start", ctx) == []


def test_apply_gives_lxd_context(tmp_path: Path) -> None:
    """``privileged``/``ephemeral`` are the strings LXD gives; ``path``, ``trigger`` and
    ``properties`` are the entry's."""
    text = ('{{ instance.privileged }} {{ container.ephemeral }} '
            '{% if instance.privileged == "true" %}P{% endif %} '
            '{{ path }} {{ trigger }} {{ properties.k }}')
    vol = template_volume(tmp_path, {"t.tpl": text})
    meta = {"templates": {"/etc/t": {"when": ["copy"], "template": "t.tpl",
                                     "properties": {"k": "v"}}}}
    templates.apply(vol, meta, "copy", _inst_ctx({}), os.getuid(), os.getgid())
    assert (vol / "rootfs/etc/t").read_text() == "true false P /etc/t copy v"


def test_apply_include_stays_in_templates_dir(tmp_path: Path) -> None:
    vol = template_volume(tmp_path, {"main.tpl": "[{% include 'part.tpl' %}]",
                             "part.tpl": "{{ container.name }}",
                             "evil.tpl": "{% include 'link.tpl' %}"})
    (vol / "templates" / "link.tpl").symlink_to("/etc/passwd")
    meta = {"templates": {"/etc/a": {"when": ["create"], "template": "main.tpl"}}}
    templates.apply(vol, meta, "create", _inst_ctx({}), os.getuid(), os.getgid())
    assert (vol / "rootfs/etc/a").read_text() == "[web]"
    meta = {"templates": {"/etc/b": {"when": ["create"], "template": "evil.tpl"}}}
    with pytest.raises(TemplateError, match=r"evil\.tpl.*link\.tpl"):
        templates.apply(vol, meta, "create", _inst_ctx({}), os.getuid(), os.getgid())
    assert not (vol / "rootfs/etc/b").exists()


def test_apply_broken_template_writes_nothing(tmp_path: Path) -> None:
    vol = template_volume(tmp_path, {"bad.tpl": "127.0.0.1 localhost\n{% if x %}\n"})
    (vol / "rootfs/etc/hosts").write_text("old\n")
    meta = {"templates": {"/etc/hosts": {"when": ["create"], "template": "bad.tpl"}}}
    with pytest.raises(TemplateError, match=r"'bad.tpl', line 2"):
        templates.apply(vol, meta, "create", _inst_ctx({}), os.getuid(), os.getgid())
    assert (vol / "rootfs/etc/hosts").read_text() == "old\n"


# -- names alone, without the engine (templatetext) ------------------------------------------

def _engine(text: str, ctx: dict[str, Any]) -> str | Exception:
    """What Jinja2 renders (or the error it raises), through jinjasandbox itself."""
    from lxdlib import jinjasandbox
    try:
        return jinjasandbox.render(text, ctx)
    except TemplateError as e:
        return e


_NAMES = st.sampled_from(["container", "name", "config", "a", "b", "items", "get", "keys",
                          "_x", "true", "None", "self", "loop", "config_get", "missing", "X1"])
_LEAF = st.one_of(st.text(max_size=8), st.none(), st.integers(), st.booleans())
_TREE = st.recursive(_LEAF, lambda kids: st.dictionaries(_NAMES, kids, max_size=4),
                     max_leaves=12)
_PIECES = st.one_of(
    st.text(alphabet="ab {}%#-\n\r|.:\"", max_size=6),  # literal text, stray braces included
    st.builds(lambda parts, left, right: "{{" + left + ".".join(parts) + right + "}}",
              st.lists(_NAMES, min_size=1, max_size=3),
              st.sampled_from(["", " ", "  ", "- ", "\t"]), st.sampled_from(["", " ", " -"])),
    st.sampled_from(["{% if a %}x{% endif %}", "{# c #}", "{{ a|upper }}", "{{ 'q' }}",
                     "{{{ a }}", "{{ a }}}", "{{ a.1 }}", "{{ a[0] }}", "{{ a() }}"]))


# mostly what the shortcut answers: text without braces, references, string leaves
_FEW = st.sampled_from(["a", "b", "name", "items", "_x", "none", "missing"])
_TEXT_TREE = st.recursive(st.one_of(st.text(max_size=6), st.none()),
                          lambda kids: st.dictionaries(_FEW, kids, max_size=3), max_leaves=10)
_PLAIN = st.one_of(
    st.text(st.characters(blacklist_characters="{\r", blacklist_categories=("Cs",)),
            max_size=8),
    st.builds(lambda parts, left, right: "{{" + left + ".".join(parts) + right + "}}",
              st.lists(_FEW, min_size=1, max_size=3), st.sampled_from(["", " "]),
              st.sampled_from(["", " "])))


@settings(max_examples=600, deadline=None)
@given(pieces=st.lists(_PLAIN, max_size=6),
       ctx=st.dictionaries(_FEW, _TEXT_TREE, max_size=4))
def test_references_render_as_the_engine_renders_them(pieces: list[str],
                                                      ctx: dict[str, Any]) -> None:
    """Text and references alone, over nested dicts of strings: the shortcut answers most of
    these, and its answer is Jinja2's."""
    from lxdlib.templatetext import substitute
    text = "".join(pieces)
    plain = substitute(text, {"config_get": templates.render, **ctx})
    if plain is not None:
        assert plain == _engine(text, ctx), text


@settings(max_examples=600, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=6),
       ctx=st.dictionaries(_NAMES, _TREE, max_size=5))
def test_names_alone_render_as_the_engine_renders_them(pieces: list[str],
                                                       ctx: dict[str, Any]) -> None:
    """Where ``templatetext`` answers without Jinja2, its answer is Jinja2's (through
    ``jinjasandbox``, with the ``config_get`` ``templates`` adds); everything else it leaves
    to the engine."""
    from lxdlib.templatetext import substitute
    text = "".join(pieces)
    plain = substitute(text, {"config_get": templates.render, **ctx})
    if plain is not None:
        assert plain == _engine(text, ctx), text


def test_names_alone_are_most_image_templates() -> None:
    """The busybox image's hostname template, LXD's usual hostname and hosts templates:
    rendered without the engine, as it renders them."""
    from lxdlib.templatetext import substitute
    ctx = _inst_ctx({})
    for text in ("{{ container.name }}\n",
                 "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n",
                 "{{ instance.name }} {{ properties.missing }} {{ nothing.at.all }}"):
        plain = substitute(text, {"config_get": templates.render, **ctx})
        assert plain is not None and plain == _engine(text, ctx), text
    # a tag, a filter, a carriage return: the engine's
    for text in ("{% if x %}{% endif %}", "{{ container.name|upper }}", "{{ a }}\r\n"):
        assert substitute(text, ctx) is None


def test_rendering_names_alone_loads_no_engine() -> None:
    """A command whose only template names values (a copy or launch from the busybox image)
    does not import Jinja2; one with a tag does."""
    code = ("import sys; from lxdlib import templates; "
            "print(templates.render('{{ container.name }}\\n', {'container': {'name': 'c'}}), "
            "'jinja2' in sys.modules); "
            "templates.render('{% if 1 %}x{% endif %}', {}); print('jinja2' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.split() == ["c", "False", "True"]
