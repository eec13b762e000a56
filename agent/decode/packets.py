"""Header decode: one PACKET_DTYPE row per frame of a FrameBatch, vectorized with numpy.

Every field is gathered for the whole batch at once; there is no Python loop per packet except
to intern IPv6 addresses (one dictionary lookup per distinct address in the batch).

Safety: every byte is read with `np.take(..., mode="clip")`, so no index can leave the buffer,
and a field counts only when the header it belongs to lies inside the captured frame (and inside
the IP datagram). Anything unparseable gets ipver 0 or zero lengths; nothing raises.

Conventions (see PACKET_DTYPE):
- ICMP / ICMPv6: `sport` is the type, `dport` the code; the payload starts after the 8-byte header.
- A non-first IP fragment has no L4 header: ports, flags and seq stay 0, and its payload is the
  fragment's data (from the end of the IP header).
- IPv4 total length 0 (a TSO/GSO segment captured before segmentation): the IP datagram is taken
  to end where the frame ends. Same for an IPv6 payload length of 0 (jumbogram, GSO).
- IPv6 extension headers (hop-by-hop, routing, fragment, destination options, AH, mobility, HIP,
  shim6) are skipped, up to 8 of them; `proto` is the upper-layer protocol found after them.
- Live captures: VLAN tags stripped by the NIC are not seen (AF_PACKET delivers them out of band).
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict

import numpy as np

from atlas.agent.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    FrameBatch,
)
from atlas.agent.decode import PACKET_DTYPE

ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, old QinQ
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
# IPv6 extension headers with the generic (next header, length in 8-octet units) layout.
_V6_EXT_GENERIC = (0, 43, 60, 135, 139, 140)
_V6_FRAGMENT, _V6_AH = 44, 51
_V6_MAX_EXT = 8

IPV6_KEY_BASE = 1 << 32  # host keys >= this are interned IPv6 addresses


class AddressBook:
    """Host keys: an IPv4 address is its 32-bit value; an IPv6 address gets an interned id above
    2**32. Bounded: past `capacity` IPv6 addresses the least recently seen is evicted (counted in
    `evictions`); its key is never reused, and `name()` of it says it was evicted."""

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < 1:
            raise ValueError(f"AddressBook capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.evictions = 0
        self._keys: OrderedDict[bytes, int] = OrderedDict()  # packed IPv6 -> key, LRU order
        self._addrs: dict[int, bytes] = {}
        self._next = IPV6_KEY_BASE + 1

    def __len__(self) -> int:
        """Number of IPv6 addresses held."""
        return len(self._keys)

    def __bool__(self) -> bool:
        return True  # an empty book is still a book (`book or AddressBook()` must keep it)

    def intern_v6(self, packed: bytes) -> int:
        """The key of a 16-byte IPv6 address (a new one if it is not known)."""
        key = self._keys.get(packed)
        if key is not None:
            self._keys.move_to_end(packed)
            return key
        if len(self._keys) >= self.capacity:
            _, old = self._keys.popitem(last=False)
            del self._addrs[old]
            self.evictions += 1
        key = self._next
        self._next += 1
        self._keys[packed] = key
        self._addrs[key] = packed
        return key

    def keys_v6(self, addrs: np.ndarray) -> np.ndarray:
        """Keys of an (n, 16) uint8 array of IPv6 addresses: one lookup per distinct address."""
        if len(addrs) == 0:
            return np.zeros(0, dtype=np.uint64)
        rows = np.ascontiguousarray(addrs, dtype=np.uint8).view(np.dtype((np.void, 16))).ravel()
        uniq, inverse = np.unique(rows, return_inverse=True)
        keys = np.fromiter((self.intern_v6(u.tobytes()) for u in uniq), dtype=np.uint64, count=len(uniq))
        return keys[inverse.ravel()]

    def key(self, text: str) -> int:
        """The key of an address written as text (config, tests); raises ValueError if it is not one."""
        try:
            addr = ipaddress.ip_address(text.strip())
        except ValueError:
            raise ValueError(f"not an IP address: {text!r}") from None
        if addr.version == 4:
            return int(addr)
        return self.intern_v6(addr.packed)

    def name(self, key: int) -> str:
        """The address of a key as text."""
        key = int(key)
        if 0 <= key < IPV6_KEY_BASE:
            return str(ipaddress.IPv4Address(key))
        packed = self._addrs.get(key)
        if packed is not None:
            return str(ipaddress.IPv6Address(packed))
        if IPV6_KEY_BASE < key < self._next:
            return f"ipv6-evicted-{key - IPV6_KEY_BASE}"
        raise KeyError(f"unknown host key {key}")


class _Frames:
    """Clip-safe big-endian reads at absolute positions of a batch buffer."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return np.take(self.buf, pos, mode="clip").astype(np.int64)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def block(self, pos: np.ndarray, width: int) -> np.ndarray:
        return np.take(self.buf, pos[:, None] + np.arange(width), mode="clip")


def decode_packets(batch: FrameBatch, book: AddressBook) -> np.ndarray:
    """IP and transport header fields of every frame of `batch` (PACKET_DTYPE, one row per frame)."""
    n = len(batch)
    out = np.zeros(n, dtype=PACKET_DTYPE)
    if n == 0:
        return out
    out["ts"] = batch.ts
    out["wirelen"] = np.maximum(batch.wirelens, 0)
    out["frame"] = np.arange(n, dtype=np.uint32)
    start = batch.offsets.astype(np.int64)
    end = start + np.maximum(batch.caplens, 0).astype(np.int64)
    out["payload_off"] = start
    if batch.buf.size == 0:
        return out
    rd = _Frames(batch.buf)
    l3, ethertype = _link_layer(rd, batch.linktype, start, end)
    if l3 is None:
        return out  # a link type we do not decode: every row stays "not IP"
    # The wire end of the frame: where the IP datagram ends when its length field says 0 (TSO).
    wire_end = start + np.maximum(batch.wirelens.astype(np.int64), end - start)
    version = rd.u8(l3) >> 4
    is4 = (version == 4) & (l3 + 20 <= end)
    is6 = (version == 6) & (l3 + 40 <= end)
    if ethertype is not None:  # the link layer says which IP version it carries
        is4 &= ethertype == ETH_P_IPV4
        is6 &= ethertype == ETH_P_IPV6

    l4 = np.zeros(n, dtype=np.int64)
    ip_end = np.zeros(n, dtype=np.int64)  # end of the IP datagram (may lie past the capture)
    proto = np.zeros(n, dtype=np.int64)
    later_fragment = np.zeros(n, dtype=bool)
    l4_known = np.zeros(n, dtype=bool)  # the L4 start was found
    if is4.any():
        _ipv4(rd, out, np.flatnonzero(is4), l3, wire_end, l4, ip_end, proto, later_fragment, l4_known)
    if is6.any():
        _ipv6(rd, out, book, np.flatnonzero(is6), l3, end, wire_end, l4, ip_end, proto, later_fragment, l4_known)

    ipok = is4 | is6
    out["proto"] = np.where(ipok, proto, 0)
    # Bytes of the datagram that were captured end at the first of: datagram end, frame end.
    cap_end = np.minimum(ip_end, end)
    pay = np.where(l4_known, l4, start)
    hdr_ok = np.zeros(n, dtype=bool)  # the L4 header fields were read
    first = l4_known & ~later_fragment

    tcp = first & (proto == IPPROTO_TCP) & (l4 + 20 <= cap_end)
    if tcp.any():
        i = np.flatnonzero(tcp)
        p = l4[i]
        doff = (rd.u8(p + 12) >> 4) * 4
        good = doff >= 20
        i, p, doff = i[good], p[good], doff[good]
        out["sport"][i] = rd.u16(p)
        out["dport"][i] = rd.u16(p + 2)
        out["seq"][i] = rd.u32(p + 4)
        out["tcp_flags"][i] = rd.u8(p + 13)
        pay[i] = p + doff
        hdr_ok[i] = True
    udp = first & (proto == IPPROTO_UDP) & (l4 + 8 <= cap_end)
    if udp.any():
        i = np.flatnonzero(udp)
        out["sport"][i] = rd.u16(l4[i])
        out["dport"][i] = rd.u16(l4[i] + 2)
        pay[i] = l4[i] + 8
        hdr_ok[i] = True
    icmp = first & ((proto == IPPROTO_ICMP) | (proto == IPPROTO_ICMPV6)) & (l4 + 8 <= cap_end)
    if icmp.any():
        i = np.flatnonzero(icmp)
        out["sport"][i] = rd.u8(l4[i])
        out["dport"][i] = rd.u8(l4[i] + 1)
        pay[i] = l4[i] + 8
        hdr_ok[i] = True
    # Other protocols and later fragments: the payload is everything after the IP header.
    other = l4_known & (later_fragment | ~np.isin(proto, (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6)))
    hdr_ok |= other

    # Clamped to the frame so that payload_off + payload_len never leaves it (when TCP options
    # were cut by the snap length, the payload would start past the captured bytes).
    out["payload_off"] = np.where(hdr_ok, np.minimum(pay, end), start)
    out["payload_len"] = np.where(hdr_ok, np.clip(cap_end - pay, 0, None), 0)
    out["payload_wirelen"] = np.where(hdr_ok, np.clip(ip_end - pay, 0, None), 0)
    return out


def _link_layer(
    rd: _Frames, linktype: int, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(start of the IP header, ethertype or None when the link layer does not say)."""
    if linktype == LINKTYPE_ETHERNET:
        type_pos = start + 12
        ethertype = rd.u16(type_pos)
        for _ in range(2):  # up to two VLAN tags (802.1ad outer, 802.1Q inner)
            tagged = np.isin(ethertype, VLAN_TPIDS)
            if not tagged.any():
                break
            type_pos = np.where(tagged, type_pos + 4, type_pos)
            ethertype = np.where(tagged, rd.u16(type_pos), ethertype)
        l3 = type_pos + 2
        return l3, np.where(l3 <= end, ethertype, 0)
    if linktype == LINKTYPE_LINUX_SLL:
        return start + 16, np.where(start + 16 <= end, rd.u16(start + 14), 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        return start + 20, np.where(start + 20 <= end, rd.u16(start), 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD):
        return start, None
    if linktype == LINKTYPE_IPV4:
        return start, np.full(start.shape, ETH_P_IPV4)
    if linktype == LINKTYPE_IPV6:
        return start, np.full(start.shape, ETH_P_IPV6)
    return None, None


def _ipv4(rd, out, i, l3, wire_end, l4, ip_end, proto, later_fragment, l4_known) -> None:
    p = l3[i]
    ihl = (rd.u8(p) & 0x0F) * 4
    total = rd.u16(p + 2)
    frag = rd.u16(p + 6)
    out["ipver"][i] = 4
    out["src"][i] = rd.u32(p + 12).astype(np.uint64)
    out["dst"][i] = rd.u32(p + 16).astype(np.uint64)
    proto[i] = rd.u8(p + 9)
    # Total length 0: a TSO segment captured before the NIC split it; the frame says how long.
    ip_end[i] = np.where(total == 0, wire_end[i], p + total)
    later_fragment[i] = (frag & 0x1FFF) != 0
    l4[i] = p + ihl
    l4_known[i] = (ihl >= 20) & ((total == 0) | (total >= ihl))


def _ipv6(rd, out, book, i, l3, end, wire_end, l4, ip_end, proto, later_fragment, l4_known) -> None:
    p = l3[i]
    plen = rd.u16(p + 4)
    out["ipver"][i] = 6
    out["src"][i] = book.keys_v6(rd.block(p + 8, 16))
    out["dst"][i] = book.keys_v6(rd.block(p + 24, 16))
    dgram_end = np.where(plen == 0, wire_end[i], p + 40 + plen)
    ip_end[i] = dgram_end
    nh = rd.u8(p + 6)
    pos = p + 40
    ok = np.ones(len(i), dtype=bool)
    frag = np.zeros(len(i), dtype=bool)
    limit = np.minimum(end[i], dgram_end)
    for _ in range(_V6_MAX_EXT):
        generic = np.isin(nh, _V6_EXT_GENERIC)
        ext = ok & (generic | (nh == _V6_FRAGMENT) | (nh == _V6_AH))
        if not ext.any():
            break
        ok &= ~ext | (pos + 8 <= limit)  # an extension header cut off: L4 unknown
        ext &= ok
        nxt = rd.u8(pos)
        hlen = np.where(generic, (rd.u8(pos + 1) + 1) * 8, 8)
        hlen = np.where(nh == _V6_AH, (rd.u8(pos + 1) + 2) * 4, hlen)
        frag |= ext & (nh == _V6_FRAGMENT) & ((rd.u16(pos + 2) >> 3) != 0)
        nh = np.where(ext, nxt, nh)
        pos = np.where(ext, pos + hlen, pos)
    ok &= ~np.isin(nh, _V6_EXT_GENERIC + (_V6_FRAGMENT, _V6_AH))  # more than _V6_MAX_EXT headers
    proto[i] = nh
    l4[i] = pos
    later_fragment[i] = frag
    l4_known[i] = ok & (pos <= dgram_end)
