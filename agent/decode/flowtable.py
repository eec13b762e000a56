"""The MQTT stream decoder's connection table: per-connection state in numpy arrays.

At tens of thousands of connections, a batch holds about one packet per connection, so a
Python object and a dict lookup per connection per batch cost as much as decoding. Here each
connection is a slot in one structured array (about 100 bytes), found for a whole batch at
once: a 64-bit hash of the connection's four-tuple, a sorted index searched with
`np.searchsorted`, and an exact comparison of the stored four-tuple (a hash collision is
"not found", never a wrong connection).

The table holds every scalar of a connection: per direction the next sequence number, whether
it has started, ended, lost its framing or is skipping an oversize message, and whether a
Python object holds bytes for it (a partial message, out-of-order segments). The stream
decoder's Python path (`streams._Flow`) loads a connection's row when it touches it and stores
it back when it is done; only connections that hold bytes keep their Python object.
"""
from __future__ import annotations

import numpy as np

ROW_DTYPE = np.dtype(
    [
        ("client", "u8"),  # the four-tuple, client side first (host keys and ports)
        ("broker", "u8"),
        ("cport", "u2"),
        ("bport", "u2"),
        ("hkey", "u8"),  # hash of the four-tuple (the index's key)
        # Per direction, [0] broker -> client, [1] client -> broker (index = to_broker):
        ("nxt", "i8", (2,)),  # next expected sequence number, -1 unknown
        ("skip", "i8", (2,)),  # bytes of an oversize message still to discard
        ("started", "?", (2,)),
        ("fin", "?", (2,)),
        ("resync", "?", (2,)),
        ("held", "?", (2,)),  # a Python object holds bytes for this direction
        ("level", "u1"),  # MQTT protocol level from the connection's CONNECT
        ("connected", "?"),  # the client has sent its first message
        ("tls", "?"),
        ("chash", "u8"),  # hash of the client id
        ("last", "f8"),  # time of the connection's latest packet
        ("used", "?"),
    ]
)

_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def flow_hash(client: np.ndarray, broker: np.ndarray, cport: np.ndarray, bport: np.ndarray) -> np.ndarray:
    """A 64-bit mix of four-tuples (vectorized; wraps for host keys above 48 bits, which only
    makes collisions likelier: lookups compare the four-tuple itself)."""
    a = (client.astype(np.uint64) << np.uint64(16)) | cport.astype(np.uint64)
    b = (broker.astype(np.uint64) << np.uint64(16)) | bport.astype(np.uint64)
    h = a * _M1 ^ (b * _M2 + (b >> np.uint64(29)))
    return h ^ (h >> np.uint64(31))


_U64 = (1 << 64) - 1


def _flow_hash_one(client: int, broker: int, cport: int, bport: int) -> int:
    """flow_hash of one four-tuple, in Python integers (a numpy call costs more for one)."""
    a = ((client << 16) | cport) & _U64
    b = ((broker << 16) | bport) & _U64
    h = ((a * int(_M1)) & _U64) ^ ((((b * int(_M2)) & _U64) + (b >> 29)) & _U64)
    return h ^ (h >> 31)


class FlowTable:
    """Slots of connections, a vectorized lookup by four-tuple, and least-recent eviction order."""

    def __init__(self, capacity: int = 1024) -> None:
        self.rows = np.zeros(capacity, dtype=ROW_DTYPE)
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._n = 0
        # The index: sorted hashes and their slots. Entries of removed slots stay until the
        # next compaction (a lookup checks that the slot is used and holds that very tuple).
        self._ih = np.zeros(0, dtype=np.uint64)
        self._islot = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[int, int]] = []  # (hash, slot) added since the last commit
        self._oldest: list[tuple[int, float]] = []  # eviction candidates: (slot, last) oldest first

    def __len__(self) -> int:
        return self._n

    # ---- lookup ---------------------------------------------------------------------------

    def lookup(self, client: np.ndarray, broker: np.ndarray, cport: np.ndarray, bport: np.ndarray,
               h: np.ndarray | None = None) -> np.ndarray:
        """Slots of these four-tuples, -1 where not in the (committed) index."""
        if h is None:
            h = flow_hash(client, broker, cport, bport)
        if not len(self._ih) or not len(h):
            return np.full(len(h), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(self._ih, h), len(self._ih) - 1)
        s = self._islot[i]
        r = self.rows  # field by field: gathering whole structured rows is far slower
        ok = ((self._ih[i] == h) & r["used"][s] & (r["client"][s] == client) & (r["broker"][s] == broker)
              & (r["cport"][s] == cport) & (r["bport"][s] == bport))
        return np.where(ok, s, -1)

    # ---- changes --------------------------------------------------------------------------

    def add(self, client: int, broker: int, cport: int, bport: int, ts: float) -> int:
        """A new connection's slot (fresh state); indexed at the next `commit`."""
        if not self._free:
            self._grow()
        s = self._free.pop()
        h = _flow_hash_one(client, broker, cport, bport)
        self.rows[s] = (client, broker, cport, bport, h, (-1, -1), (0, 0), (False, False), (False, False),
                        (False, False), (False, False), 4, False, False, 0, ts, True)
        self._n += 1
        self._pending.append((h, s))
        return s

    def remove(self, slot: int) -> None:
        self.rows["used"][slot] = False
        self._free.append(slot)
        self._n -= 1

    def commit(self) -> list[int]:
        """Index the slots added since the last commit. Returns the slots that could not be
        indexed (another live connection has the same hash): their owner must keep them
        reachable another way."""
        if not self._pending:
            return []
        pend, self._pending = self._pending, []
        live = [(h, s) for h, s in pend if self.rows["used"][s] and int(self.rows["hkey"][s]) == h]
        unindexed: list[int] = []
        hs = np.array([h for h, _ in live], dtype=np.uint64)
        ss = np.array([s for _, s in live], dtype=np.int64)
        if len(hs):
            order = np.argsort(hs, kind="stable")
            hs, ss = hs[order], ss[order]
            dup = np.zeros(len(hs), dtype=bool)
            dup[1:] = hs[1:] == hs[:-1]
            unindexed += ss[dup].tolist()
            hs, ss = hs[~dup], ss[~dup]
            pos = np.searchsorted(self._ih, hs)
            at = np.minimum(pos, max(len(self._ih) - 1, 0))
            exists = (pos < len(self._ih)) & (self._ih[at] == hs) if len(self._ih) else np.zeros(len(hs), dtype=bool)
            if exists.any():
                old = self._islot[at[exists]]
                stale = ~self.rows["used"][old] | (self.rows["hkey"][old] != hs[exists]) | (old == ss[exists])
                # A stale entry of the same hash (often the same tuple, closed and reopened) is
                # taken over; a live one is a true collision.
                self._islot[at[exists][stale]] = ss[exists][stale]
                unindexed += ss[exists][~stale].tolist()
            new = ~exists
            self._ih = np.insert(self._ih, pos[new], hs[new])
            self._islot = np.insert(self._islot, pos[new], ss[new])
        if len(self._ih) > 2 * self._n + 1024:
            self._compact()
        return unindexed

    def oldest(self) -> int:
        """The used slot with the earliest `last` (least recently seen), for eviction."""
        rows = self.rows
        while True:
            while self._oldest:
                s, last = self._oldest.pop()
                if rows["used"][s] and rows["last"][s] == last:
                    return s
            used = np.flatnonzero(rows["used"])
            if not len(used):
                raise LookupError("FlowTable.oldest: the table is empty")
            k = min(len(used), max(1, self._n // 16))
            cand = used[np.argpartition(rows["last"][used], k - 1)[:k]] if k < len(used) else used
            cand = cand[np.argsort(rows["last"][cand], kind="stable")[::-1]]  # oldest popped first
            self._oldest = list(zip(cand.tolist(), rows["last"][cand].tolist()))

    def idle(self, before: float) -> np.ndarray:
        """Used slots last seen before `before`, oldest first."""
        rows = self.rows
        s = np.flatnonzero(rows["used"] & (rows["last"] < before))
        return s[np.argsort(rows["last"][s], kind="stable")]

    def _grow(self) -> None:
        cap = len(self.rows)
        rows = np.zeros(2 * cap, dtype=ROW_DTYPE)
        rows[:cap] = self.rows
        self.rows = rows
        self._free.extend(range(2 * cap - 1, cap - 1, -1))

    def _compact(self) -> None:
        s = self._islot
        keep = self.rows["used"][s] & (self.rows["hkey"][s] == self._ih)
        self._ih, self._islot = self._ih[keep], self._islot[keep]
