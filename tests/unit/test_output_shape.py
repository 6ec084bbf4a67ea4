"""The output-shape comparison (tests/output_shape.py) that holds lxdlib's CLI to LXD's recorded
outputs: what it treats as volatile, what it keeps, and that it reports a real difference."""

from __future__ import annotations

from typing import Any

import pytest

from tests.output_shape import (
    INFO,
    TABLE,
    TEXT,
    YAML,
    differences,
    info_shape,
    normalise,
    shape,
    table_shape,
    type_tree,
)

NORMALISED = [
    # (input, expected)
    ("Created: 2026/12/04 18:16 UTC", "Created: <time>"),
    ("| Dec 4, 2026 at 6:14pm (UTC) |", "| <time> |"),
    ("created_at: 2026-12-04T18:16:10.123456789Z", "created_at: <time>"),
    ("at 2026-12-04 18:16:10+00:00", "at <time>"),
    ("fp 2e3b0d0ecbabdb664fb73019d829aa2ae1fddbc65b13fc01263a5439e43c08b9",
     "fp <fingerprint>"),
    ("| 2e3b0d0ecbab | no |", "| <fp12> | no |"),
    ("MAC address: 00:16:3e:65:fa:27", "MAC address: <mac>"),
    ("inet:  10.177.13.134/24 (global)", "inet:  <ipv4> (global)"),
    ("10.177.13.140 (eth0)", "<ipv4> (eth0)"),
    ("inet6: fe80::216:3eff:fe65:fa27/64 (link)", "inet6: <ipv6> (link)"),
    ("inet6: ::1/128 (local)", "inet6: <ipv6> (local)"),
    ("fd42:1:2:3::1 (eth0)", "<ipv6> (eth0)"),
    ("Memory (current): 760.00KiB", "Memory (current): <size>"),
    ("| 0.99MB | x |", "| <size> | x |"),
    ("Bytes received: 704B", "Bytes received: <size>"),
    ("Bytes sent: 1.20kB", "Bytes sent: <size>"),
    ("took 1.5s, then 20ms", "took <duration>, then <duration>"),
    ("PID: 21721", "PID: <pid>"),
    ("volatile.uuid: cddac496-4c33-42ec-b20b-f2a7e2bfac42", "volatile.uuid: <uuid>"),
    ("Host interface: veth90d38287", "Host interface: <host-iface>"),
    ("Instance name is: diverse-yeti", "Instance name is: <generated-name>"),
    ("Creating c\nRetrieving image: Unpack: 7% (332.23MB/s)\nStarting c",
     "Creating c\nStarting c"),
    ("Exporting the image: 100% (250.00MB/s)\nImage exported successfully!",
     "Image exported successfully!"),
    ("Starting c\nRemapping container filesystem\n", "Starting c\n"),
    # kept as they are: times of day inside words, names, plain numbers, architectures
    ("limits.cpu: 1", "limits.cpu: 1"),
    ("Architecture: x86_64", "Architecture: x86_64"),
    ("Device sshport22 added to apline-test", "Device sshport22 added to apline-test"),
    ("tcp:127.0.0.1:22", "tcp:<ipv4>:22"),
    ("Processes: 2", "Processes: 2"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_normalise_subs_go_first_longest_first() -> None:
    assert normalise("sshport35127 on 35127 and 3512",
                     {"35127": "<port>", "3512": "<short>"}) == \
        "sshport<port> on <port> and <short>"


TABLE_TEXT = """\
+------+---------+----------------------+------+
| NAME |  STATE  |         IPV4         | IPV6 |
+------+---------+----------------------+------+
| a    | RUNNING | 10.0.3.5 (eth0)      |      |
|      |         | 10.0.4.5 (eth1)      |      |
+------+---------+----------------------+------+
| b    | STOPPED |                      |      |
+------+---------+----------------------+------+
"""


@pytest.mark.parametrize(("text", "expected"), [
    (TABLE_TEXT, {"columns": ["NAME", "STATE", "IPV4", "IPV6"],
                  "filled": [[True, True, True, False], [True, True, False, False]]}),
    ("+---+\n| A |\n+---+\n", {"columns": ["A"], "filled": []}),
    ("NAME STATE\na RUNNING\n", {"table": None}),
])
def test_table_shape(text: str, expected: dict[str, Any]) -> None:
    assert table_shape(text) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ({"a": 1, "b": "x", "c": None, "d": True}, {"a": "int", "b": "str", "c": "null",
                                               "d": "bool"}),
    ({"devices": {}}, {"devices": {}}),
    ({"used_by": []}, {"used_by": []}),
    ({"used_by": ["/1.0/instances/a", "/1.0/instances/b"]}, {"used_by": ["str"]}),
    ([{"a": 1}, {"b": "x"}], [{"a": "int", "b": "str"}]),
    ([1, "x"], ["int|str"]),
    ({"sshport35127": {"type": "proxy"}}, {"sshport<port>": {"type": "str"}}),
])
def test_type_tree(value: Any, expected: Any) -> None:
    assert type_tree(value, {"35127": "<port>"}) == expected


def test_info_shape_paths() -> None:
    text = ("Name: c\nStatus: RUNNING\n\nResources:\n  Processes: 2\n  Memory usage:\n"
            "    Memory (current): 1.00MiB\nAliases:\n    - busybox\nSnapshots:\n"
            "  snap0 (taken at 2026/12/04 18:16 UTC) (stateless)\n")
    assert info_shape(text)["lines"] == [
        "Name", "Status", "Resources", "Resources > Processes", "Resources > Memory usage",
        "Resources > Memory usage > Memory (current)", "Aliases", "Aliases > - <item>",
        "Snapshots", "Snapshots > snap0 (taken at <time>) (stateless)"]


def run(stdout: str, exit_code: int = 0, stderr: str = "") -> dict[str, Any]:
    return {"stdout": stdout, "stderr": stderr, "exit_code": exit_code}


DIFFERENCES = [
    # (format, LXD's run, lxdlib's run, expected differences)
    (TEXT, run("Creating a\nStarting a\n"), run("Creating a\nStarting a\n"), []),
    (TEXT, run("Profile p created\n"), run(""),
     ["stdout: LXD ['Profile p created'], lxdlib []"]),
    (TEXT, run("", 127, "Error: Command not found\n"), run("", 127),
     ["stderr: LXD has an error message, lxdlib none"]),
    (TEXT, run("", 1, "Error: unknown command\n"), run(""),
     ["exit code: LXD 1, lxdlib 0", "stderr: LXD has an error message, lxdlib none"]),
    (TABLE, run(TABLE_TEXT), run(TABLE_TEXT.replace("10.0.3.5", "10.9.9.9")), []),
    (TABLE, run(TABLE_TEXT), run(TABLE_TEXT.replace("IPV6", "IPV7")),
     ["columns: LXD ['NAME', 'STATE', 'IPV4', 'IPV6'], lxdlib ['NAME', 'STATE', 'IPV4', 'IPV7']"]),
    (TABLE, run(TABLE_TEXT), run(TABLE_TEXT.replace(
        "| b    | STOPPED |                      |      |",
        "| b    | STOPPED |                      | fe80 |")),
     ["rows with IPV4 empty: LXD 0, lxdlib 1", "rows with IPV4, IPV6 empty: LXD 1, lxdlib 0"]),
    # rows are compared whatever their order (names, some generated at random, sort them)
    (TABLE, run(TABLE_TEXT), run("+---+---+---+---+\n| NAME | STATE | IPV4 | IPV6 |\n"
                                 "+---+---+---+---+\n| a | STOPPED | | |\n+---+---+---+---+\n"
                                 "| b | RUNNING | 10.0.0.1 | |\n+---+---+---+---+\n"), []),
    (TABLE, run(TABLE_TEXT), run("NAME STATE\n"), ["stdout kind: LXD ['columns', 'filled'], "
                                                   "lxdlib ['table']"]),
    (YAML, run("a: 1\nb: {c: x}\n"), run("b: {c: y}\na: 2\n"), []),
    (YAML, run("a: 1\nb: {c: x}\nl: [x]\n"), run("a: '1'\nb: {d: x}\nl: []\n"),
     ["type of a: LXD int, lxdlib str", "missing key b.c", "extra key b.d",
      "l: LXD a non-empty list, lxdlib an empty list"]),
    (INFO, run("Name: a\nPID: 1\n"), run("Name: b\nPID: 2\n"), []),
    (INFO, run("Name: a\nPID: 1\n"), run("PID: 1\nName: a\n"), ["line order differs"]),
    # `image info`'s properties come from a Go map: their order is LXD's chance, not compared;
    # the sections around them still are
    (INFO, run("Size: 1\nProperties:\n    os: a\n    release: b\nAliases:\n"),
     run("Size: 1\nProperties:\n    release: b\n    os: a\nAliases:\n"), []),
    (INFO, run("Size: 1\nProperties:\n    os: a\nAliases:\n"),
     run("Properties:\n    os: a\nSize: 1\nAliases:\n"), ["line order differs"]),
    (INFO, run("Name: a\nRes:\n  Memory (peak): 1B\n"), run("Name: a\nRes:\n  Mem: 1B\n"),
     ["missing line Res > Memory (peak)", "extra line Res > Mem"]),
    # an error's stdout is text, whatever the format on success
    (YAML, run("", 1, "Error: x\n"), run("", 1, "Error: y\n"), []),
]


@pytest.mark.parametrize(("fmt", "lxd", "ours", "expected"), DIFFERENCES)
def test_differences(fmt: str, lxd: dict[str, Any], ours: dict[str, Any],
                     expected: list[str]) -> None:
    assert differences(shape(lxd, fmt), shape(ours, fmt)) == expected


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        shape(run("x"), "csv")


# -- the recorded data matches the script that the shape test runs ------------------------------

def test_recording_matches_the_seed_script() -> None:
    """A changed step (tests/seed_steps.py) needs a new recording (tests/data/lxd/record.py)."""
    import json
    from pathlib import Path

    from tests.seed_steps import STEPS
    data = Path(__file__).resolve().parents[1] / "data" / "lxd" / "seed"
    rec = json.loads((data / "recording.json").read_text())
    assert [(s["id"], s["line"]) for s in rec["steps"]] == [
        (s.id, s.line.format(**rec["values"])) for s in STEPS]
    known = json.loads((data / "known-differences.json").read_text())["differences"]
    assert set(known) - {"*"} <= {s.id for s in STEPS}
    assert all(d["reason"].strip() for entries in known.values() for d in entries)
