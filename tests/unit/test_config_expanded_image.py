"""The ``image.*`` keys an image gives an instance made from it: only what a config can hold."""

from __future__ import annotations

from lxdlib.config import schema


def test_an_image_gives_only_the_properties_a_config_can_hold() -> None:
    """An image property whose name has a space or a line break became an ``image.*`` key
    that every later edit of the instance refused (its whole config is checked)."""
    props = {"os": "busybox", "description": "two\nlines", "a b": "c", "os\nx": "y",
             "v": "\udcff", "release": "1.35.0", "serial": ""}
    assert schema.image_config(props) == {"image.os": "busybox", "image.release": "1.35.0",
                                          "image.serial": ""}
    schema.validate_instance_config(schema.image_config(props))
