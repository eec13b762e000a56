"""Live capture from an interface into FrameBatches: AF_PACKET with a kernel BPF filter.

Two backends:
- "ring" (default): a TPACKET_V3 memory-mapped receive ring. The kernel fills blocks of many
  frames; we copy a whole block with one memcpy, hand it back, and find the frames in it with one
  small loop step per frame (following tp_next_offset). No system call per packet.
- "socket": a plain `recv_into` loop, one system call per packet (about 2.4 µs/packet here).
  The fallback when the ring cannot be set up (old kernels, some emulators).

Scapy/libpcap only compile the BPF filter (`compile_filter`); the hot path never builds a Scapy
packet. Frames in a batch are not back to back: ring batches keep the tpacket headers between
them; `FrameBatch.offsets` says where each frame starts.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import mmap
import os
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Iterator

import numpy as np

from atlas.agent.capture import LINKTYPE_ETHERNET, LINKTYPE_RAW, FrameBatch

log = logging.getLogger(__name__)

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>, <linux/sockios.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SIOCGIFHWADDR = 0x8927
SIOCGIFINDEX = 0x8933
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
BPF_RET_K = 0x06  # BPF_RET | BPF_K: "accept k bytes of the packet"
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
SKF_AD_OFF = 0xFFFFF000  # -0x1000: ancillary data loads (<linux/filter.h>)
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4
ACCEPT_ALL = 0xFFFFFFFF
CLONE_NEWNET = 0x40000000

# Offsets in struct tpacket_block_desc (hdr is tpacket_hdr_v1) and struct tpacket3_hdr.
_BLK_STATUS = 8
_BLK_NUM_PKTS = 12
_BLK_FIRST = 16
_BLK_LEN = 20
_PKT_SEC, _PKT_NSEC, _PKT_SNAPLEN, _PKT_LEN, _PKT_MAC = 4, 8, 12, 16, 24

BACKENDS = ("ring", "socket")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _drop_outgoing_prefix() -> list[_SockFilter]:
    """BPF that rejects packets the host sends (pkt_type OUTGOING) and falls through otherwise.

    On loopback every packet passes twice, once leaving and once arriving; like libpcap we keep
    only the arriving copy.
    """
    return [
        _SockFilter(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        _SockFilter(BPF_JEQ_K, 0, 1, PACKET_OUTGOING),
        _SockFilter(BPF_RET_K, 0, 0, 0),
    ]


def compile_bpf(expression: str | None, linktype: int, snaplen: int, *, drop_outgoing: bool = False) -> ctypes.Array:
    """Classic BPF instructions for a tcpdump-style filter (compiled by libpcap through Scapy).

    Every "accept" is set to `snaplen` bytes (libpcap compiles "accept 65535", which would cut
    64 KB GSO frames), so the kernel copies no more than that; with no expression the program
    is just "accept snaplen bytes".
    """
    prefix = _drop_outgoing_prefix() if drop_outgoing else []
    if not expression:
        return (_SockFilter * (len(prefix) + 1))(*prefix, _SockFilter(BPF_RET_K, 0, 0, snaplen))
    program = _libpcap_program(expression, linktype)
    insns = (_SockFilter * (len(prefix) + len(program)))(*prefix)
    for i, (code, jt, jf, k) in enumerate(program):  # jumps are relative: the prefix does not move them
        insns[len(prefix) + i] = _SockFilter(code, jt, jf, snaplen if code == BPF_RET_K and k else k)
    return insns


_COMPILE = """
import json, sys
from scapy.arch.common import compile_filter, free_filter
prog = compile_filter(sys.argv[1], linktype=int(sys.argv[2]))
print(json.dumps([[prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k] for i in range(prog.bf_len)]))
free_filter(prog)
"""


def _libpcap_program(expression: str, linktype: int) -> list[tuple[int, int, int, int]]:
    """Compile a filter with libpcap through Scapy, in a short-lived child process: importing
    Scapy would cost the daemon about 40 MB of memory for its whole life, for a one-off."""
    try:
        r = subprocess.run([sys.executable, "-c", _COMPILE, expression, str(linktype)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"bpf filter {expression!r}: cannot run the compiler: {e}") from None
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or ["compiler failed"]
        if "No module named" in r.stderr:
            raise RuntimeError(f"bpf filter {expression!r} needs Scapy with libpcap: {lines[-1]}")
        raise ValueError(f"bpf filter {expression!r}: {lines[-1]}")
    return [tuple(insn) for insn in json.loads(r.stdout)]


class LiveCapture:
    """Frames from `interface` in batches, through a kernel BPF filter.

        with LiveCapture("eth0", bpf="tcp port 1883") as cap:
            for batch in cap.batches():   # an empty batch after `timeout` s without traffic
                ...

    `netns`: open the socket inside that named network namespace (/run/netns/NAME); the capture
    is then used from any thread. `promisc`: ask for promiscuous mode; refused (e.g. under qemu)
    it is logged, not fatal.
    """

    def __init__(
        self,
        interface: str,
        bpf: str | None = None,
        snaplen: int = 65535,
        batch_size: int = 4096,
        timeout: float = 0.25,
        *,
        backend: str = "ring",
        promisc: bool = True,
        netns: str | None = None,
        ring_blocks: int = 16,
        block_size: int = 1 << 20,
        block_timeout_ms: int = 50,
        rcvbuf: int = 4 << 20,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"capture backend must be one of {BACKENDS}, got {backend!r}")
        if not 64 <= snaplen <= 262144:
            raise ValueError(f"snaplen must be in 64..262144, got {snaplen}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if block_size < mmap.PAGESIZE or block_size & (block_size - 1) or ring_blocks < 2:
            raise ValueError("block_size must be a power of two >= the page size, ring_blocks >= 2")
        self.interface = interface
        self.bpf = bpf
        self.snaplen = snaplen
        self.batch_size = batch_size
        self.timeout = timeout
        self.requested_backend = backend
        self.backend = backend  # the one in use (falls back to "socket" if the ring fails)
        self.promisc = promisc
        self.netns = netns
        self.ring_blocks = ring_blocks
        self.block_size = block_size
        self.block_timeout_ms = block_timeout_ms
        self.rcvbuf = rcvbuf
        self.linktype = LINKTYPE_ETHERNET
        self.ifindex = 0
        self.fallback_reason = ""
        self._sock: socket.socket | None = None
        self._ring: mmap.mmap | None = None
        self._block = 0  # next ring block to read
        self._poll: select.poll | None = None
        self._stop = False
        self._packets = 0
        self._bytes = 0
        self._captured_bytes = 0
        self._batches = 0
        self._idle = 0
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._kernel_freezes = 0

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> "LiveCapture":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the socket, attach the filter, set up the ring (or fall back), bind."""
        if self._sock is not None:
            return
        with _in_netns(self.netns):
            self.ifindex, arphrd = interface_info(self.interface)
            framed = _framed(arphrd)
            self.linktype = LINKTYPE_ETHERNET if framed else LINKTYPE_RAW
            # Protocol 0: nothing is queued until bind(), which comes after ring and filter.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW if framed else socket.SOCK_DGRAM, 0)
        try:
            self.backend = self.requested_backend
            if self.backend == "ring":
                try:
                    self._setup_ring(sock)
                except OSError as e:
                    self.fallback_reason = f"TPACKET_V3 ring unavailable ({e.strerror or e}); using recv_into"
                    log.warning("capture on %s: %s", self.interface, self.fallback_reason)
                    self.backend = "socket"
            if self.backend == "socket":
                self._setup_socket(sock)
            # The ring keeps a frame's wire length when the filter cuts it to snaplen; a plain
            # socket would not (recv_into(MSG_TRUNC) then sees the cut length), so there the
            # filter accepts whole frames and recv_into cuts them.
            cap = self.snaplen if self.backend == "ring" else ACCEPT_ALL
            loopback = arphrd == ARPHRD_LOOPBACK
            if self.bpf or loopback or self.backend == "ring":
                insns = compile_bpf(self.bpf, self.linktype, cap, drop_outgoing=loopback)
                prog = _SockFprog(len(insns), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))
            sock.bind((self.interface, ETH_P_ALL))
            if self.promisc:
                self._set_promisc(sock)
        except BaseException:
            self._release(sock)
            raise
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._stop = False

    def close(self) -> None:
        """Stop and release the socket and ring (call from the thread that reads batches)."""
        self._stop = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                self._read_kernel_stats(sock)
            self._release(sock)
        self._poll = None

    def stop(self) -> None:
        """Make `batches()` return at its next wake-up (safe from another thread or a signal)."""
        self._stop = True

    def _release(self, sock: socket.socket) -> None:
        if self._ring is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._ring.close()
            self._ring = None
        sock.close()

    def _setup_ring(self, sock: socket.socket) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048  # unused by TPACKET_V3 except for the kernel's consistency checks
        frames = self.block_size // frame_size * self.ring_blocks
        req = struct.pack(
            "7I", self.block_size, self.ring_blocks, frame_size, frames, self.block_timeout_ms, 0, 0
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        try:
            self._ring = mmap.mmap(
                sock.fileno(), self.block_size * self.ring_blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError:
            # A ring without its mapping would swallow every packet: remove it before falling back.
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(28))
            raise
        self._block = 0

    def _setup_socket(self, sock: socket.socket) -> None:
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE ignores rmem_max (needs CAP_NET_ADMIN)
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.rcvbuf)
                break
            except OSError:
                continue
        sock.setblocking(False)

    def _set_promisc(self, sock: socket.socket) -> None:
        mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
        try:
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as e:
            # Under qemu-user this fails with ENOTSUP/ENOPROTOOPT; capture still sees our traffic.
            log.warning("capture on %s: promiscuous mode refused (%s); continuing without", self.interface, e)

    # -- reading -----------------------------------------------------------------------------

    def batches(self) -> Iterator[FrameBatch]:
        """Batches of frames as they arrive; an empty batch after `timeout` s without any."""
        if self._sock is None:
            raise RuntimeError("LiveCapture.batches() before open() (use it as a context manager)")
        read = self._ring_batches if self.backend == "ring" else self._socket_batch
        timeout_ms = max(1, int(self.timeout * 1000))
        while not self._stop and self._sock is not None:
            got = False
            for batch in read():
                got = True
                self._count(batch)
                yield batch
                if self._stop:
                    return
            if got:
                continue
            try:
                ready = self._poll.poll(timeout_ms) if self._poll else []
            except InterruptedError:  # pragma: no cover - PEP 475 retries, but be explicit
                ready = []
            if not ready and not self._stop:
                self._idle += 1
                yield FrameBatch.from_frames([], [], self.linktype)

    def _count(self, batch: FrameBatch) -> None:
        self._batches += 1
        self._packets += len(batch)
        self._bytes += int(batch.wirelens.sum(dtype=np.int64))
        self._captured_bytes += int(batch.caplens.sum(dtype=np.int64))

    def _ring_batches(self) -> Iterator[FrameBatch]:
        """Every block the kernel has handed over, in order; each becomes one or more batches."""
        ring = self._ring
        assert ring is not None
        size, nblocks = self.block_size, self.ring_blocks
        while True:
            base = self._block * size
            if not struct.unpack_from("I", ring, base + _BLK_STATUS)[0] & TP_STATUS_USER:
                return
            num, first, blk_len = struct.unpack_from("III", ring, base + _BLK_NUM_PKTS)
            # One copy of the used part of the block (rounded to 8 for the uint32 view), then the
            # block goes straight back to the kernel.
            data = np.empty((blk_len + 7) & ~7, dtype=np.uint8)
            with memoryview(ring) as view:
                data[:blk_len] = np.frombuffer(view[base : base + blk_len], dtype=np.uint8)
            struct.pack_into("I", ring, base + _BLK_STATUS, TP_STATUS_KERNEL)
            self._block = (self._block + 1) % nblocks
            if num:
                yield from self._block_batches(data, num, first)

    def _block_batches(self, data: np.ndarray, num: int, first: int) -> Iterator[FrameBatch]:
        words = memoryview(data).cast("I")  # tp_next_offset is the first word of each header
        heads = []
        append = heads.append
        pos = first
        for _ in range(num):
            append(pos)
            pos += words[pos >> 2]
        h = np.array(heads, dtype=np.int64)
        u32 = data.view(np.uint32)
        q = h >> 2
        sec = u32[q + (_PKT_SEC >> 2)]
        nsec = u32[q + (_PKT_NSEC >> 2)]
        caplens = u32[q + (_PKT_SNAPLEN >> 2)].astype(np.int32)
        wirelens = u32[q + (_PKT_LEN >> 2)].astype(np.int32)
        offsets = h + data.view(np.uint16)[(h + _PKT_MAC) >> 1]
        ts = sec + nsec * 1e-9
        for lo in range(0, num, self.batch_size):
            hi = min(num, lo + self.batch_size)
            yield FrameBatch(data, offsets[lo:hi], caplens[lo:hi], wirelens[lo:hi], ts[lo:hi], self.linktype)

    def _socket_batch(self) -> Iterator[FrameBatch]:
        """One batch of what the socket has queued (nothing if it is empty)."""
        sock = self._sock
        assert sock is not None
        snaplen = self.snaplen
        size = max(4 << 20, 2 * snaplen)
        buf = np.empty(size, dtype=np.uint8)
        view = memoryview(buf)
        recv_into = sock.recv_into
        now = time.time
        offsets, caplens, wirelens, stamps = [], [], [], []
        pos = 0
        limit = size - snaplen
        for _ in range(self.batch_size):
            if pos > limit:
                break
            try:
                n = recv_into(view[pos : pos + snaplen], snaplen, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EINTR, errno.ENETDOWN):
                    break
                raise
            cap = n if n < snaplen else snaplen
            offsets.append(pos)
            caplens.append(cap)
            wirelens.append(n)
            stamps.append(now())
            pos += cap
        view.release()
        if offsets:
            yield FrameBatch(
                buf[:pos],
                np.array(offsets, dtype=np.int64),
                np.array(caplens, dtype=np.int32),
                np.array(wirelens, dtype=np.int32),
                np.array(stamps, dtype=np.float64),
                self.linktype,
            )

    # -- counters ----------------------------------------------------------------------------

    def _read_kernel_stats(self, sock: socket.socket) -> None:
        # The kernel resets these counters on every read: accumulate. Its tp_packets includes
        # the drops.
        raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops = struct.unpack_from("II", raw, 0)
        self._kernel_packets += packets
        self._kernel_drops += drops
        if len(raw) >= 12:
            self._kernel_freezes += struct.unpack_from("I", raw, 8)[0]

    def stats(self) -> dict:
        """Counters since open: frames and bytes delivered, and the kernel's packets and drops."""
        if self._sock is not None:
            self._read_kernel_stats(self._sock)
        return {
            "interface": self.interface,
            "backend": self.backend,
            "linktype": self.linktype,
            "packets": self._packets,
            "bytes": self._bytes,  # on the wire
            "captured_bytes": self._captured_bytes,
            "batches": self._batches,
            "idle_batches": self._idle,
            "kernel_packets": self._kernel_packets,  # that passed the filter, including drops
            "kernel_drops": self._kernel_drops,
            "kernel_freezes": self._kernel_freezes,
        }


def interface_linktype(name: str) -> int:
    """The link type a capture on this interface delivers (what its BPF filter is compiled
    for); raises ValueError naming the interface if it does not exist here."""
    return LINKTYPE_ETHERNET if _framed(interface_info(name)[1]) else LINKTYPE_RAW


def _framed(arphrd: int) -> bool:
    # Ethernet-framed interfaces give whole frames; others (tun, wireguard, ...) are read from
    # the IP header on (SOCK_DGRAM) and decoded as raw IP.
    return arphrd in (ARPHRD_ETHER, ARPHRD_LOOPBACK)


def interface_info(name: str) -> tuple[int, int]:
    """(ifindex, ARPHRD type) of an interface in the current network namespace."""
    if not name or len(name) > 15 or "/" in name:
        raise ValueError(f"capture interface {name!r}: not a valid interface name")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16s16x", name.encode())
        try:
            index = struct.unpack_from("i", fcntl.ioctl(s.fileno(), SIOCGIFINDEX, req), 16)[0]
            arphrd = struct.unpack_from("H", fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, req), 16)[0]
        except OSError as e:
            raise ValueError(f"capture interface {name!r}: {e.strerror or e}") from None
    return index, arphrd


_libc = None


@contextlib.contextmanager
def _in_netns(name: str | None) -> Iterator[None]:
    """Run the block with the calling thread in the named network namespace (None: stay)."""
    if not name:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            there = os.open(os.path.join("/run/netns", name), os.O_RDONLY)
        except OSError as e:
            raise ValueError(f"network namespace {name!r}: {e.strerror}") from None
        try:
            _setns(there)
            try:
                yield
            finally:
                _setns(here)
        finally:
            os.close(there)
    finally:
        os.close(here)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
