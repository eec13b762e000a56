"""Deep dissection with Scapy: for the few packets that deserve it (evidence, samples).

Scapy is imported on first use only: the hot path never needs it, and it costs memory.
"""
from __future__ import annotations

from functools import lru_cache

from atlas.agent.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
)


@lru_cache(maxsize=1)
def _layers() -> dict:
    from scapy.contrib import mqtt  # noqa: F401  (binds MQTT to TCP port 1883)
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether

    return {"ether": Ether, "sll": CookedLinux, "sll2": CookedLinuxV2, "ip": IP, "ip6": IPv6}


def dissect(frame: bytes, linktype: int):
    """A Scapy packet for one frame of the given link type."""
    L = _layers()
    if linktype == LINKTYPE_ETHERNET:
        return L["ether"](frame)
    if linktype == LINKTYPE_LINUX_SLL:
        return L["sll"](frame)
    if linktype == LINKTYPE_LINUX_SLL2:
        return L["sll2"](frame)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return (L["ip6"] if frame[:1] and frame[0] >> 4 == 6 else L["ip"])(frame)
    raise ValueError(f"link type {linktype} is not supported")


def summary(frame: bytes, linktype: int) -> str:
    """Scapy's one-line summary of a frame; never raises (evidence is best effort)."""
    try:
        return dissect(frame, linktype).summary()
    except Exception as exc:  # malformed frames are exactly what evidence may contain
        return f"<undissectable frame of {len(frame)} bytes: {exc.__class__.__name__}>"
