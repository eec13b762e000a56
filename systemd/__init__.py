"""systemd units, sysusers entry and config templates of ATLAS, shipped as package data.

`atlas-agent install` (atlas.agent.install) reads them from here, so a gateway installed from a
wheel has everything it needs without a checkout of the repository.
"""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    """The text of one shipped file (``atlas-agent.service``, ``agent.toml``, ...)."""
    return resources.files(__name__).joinpath(name).read_text()
