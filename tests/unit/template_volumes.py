"""A stand-in for an instance volume with an image's templates, shared by the template tests."""

from __future__ import annotations

from pathlib import Path


def template_volume(tmp_path: Path, tpls: dict[str, str]) -> Path:
    """``tmp_path/vol`` with an empty ``rootfs/etc`` and ``templates/`` holding ``tpls``
    (file name → text), as an image's unpacked volume has them."""
    vol = tmp_path / "vol"
    (vol / "rootfs" / "etc").mkdir(parents=True)
    (vol / "templates").mkdir()
    for name, text in tpls.items():
        (vol / "templates" / name).write_text(text)
    return vol
