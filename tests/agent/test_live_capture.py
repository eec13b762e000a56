"""Live capture on a veth pair in network namespaces (atlas.agent.capture.live).

Frames are crafted with Scapy and sent from a device namespace with a raw AF_PACKET socket; the
capture runs on the gateway side of the veth (opened inside the gateway namespace with
`netns=`, then read from the test's thread). Destination MAC 02:00:00:00:00:99 belongs to no one,
so no stack answers and the capture sees exactly what was sent. IPv6 is switched off in the lab
namespaces, and IGMP reports for link-local groups, so that no background frame slips in.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from atlas.agent.capture import LINKTYPE_ETHERNET, LINKTYPE_RAW
from atlas.agent.capture.live import LiveCapture
from atlas.agent.decode import PACKET_DTYPE, TCP_ACK, TCP_PSH, TCP_SYN
from atlas.agent.decode.packets import AddressBook, decode_packets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402  (tests/lab.py)

pytestmark = [pytest.mark.netns]

BACKENDS = ["ring", "socket"]
ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:99")


@pytest.fixture(scope="module")
def net():
    reason = lab.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    the_lab = lab.Lab()
    try:
        dev = the_lab.add_device("cam")
        # Keep the lab silent: no IPv6 (router solicitations, MLD), no IGMP reports for
        # link-local groups, no multicast snooping on the bridge (it joins 224.0.0.106).
        for ns in (the_lab.gw, dev.netns):
            quiet = ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                     "net.ipv4.igmp_link_local_mcast_reports=0"]
            assert the_lab.run(ns, quiet).returncode == 0
        assert the_lab.run(the_lab.gw, ["ip", "link", "set", the_lab.bridge, "type", "bridge", "mcast_snooping", "0"]).returncode == 0
        time.sleep(0.3)
        yield the_lab, dev
    finally:
        the_lab.close()


def send(dev, frames: list[bytes]) -> None:
    """Send raw frames out of the device's veth end (into the lab's gateway namespace only)."""
    with lab.in_netns(dev.netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((dev.veth_dev, 0))
        for f in frames:
            sock.send(f)
    finally:
        sock.close()


def collect(cap: LiveCapture, expected: int, limit_s: float = 10.0):
    """Read until `expected` frames arrived and then one idle period passed (so extras show)."""
    frames, rows, book = [], [], AddressBook()
    deadline = time.monotonic() + limit_s
    for batch in cap.batches():
        if len(batch):
            assert batch.linktype == cap.linktype
            rows.append(decode_packets(batch, book))
            frames += [(batch.frame(i), int(batch.wirelens[i])) for i in range(len(batch))]
        elif len(frames) >= expected:
            break
        if time.monotonic() > deadline:
            break
    packets = np.concatenate(rows) if rows else np.zeros(0, dtype=PACKET_DTYPE)
    return frames, packets, book


def open_capture(net_, **kw) -> LiveCapture:
    the_lab, dev = net_
    kw.setdefault("timeout", 0.15)
    cap = LiveCapture(dev.veth_gw, netns=the_lab.gw, **kw)
    cap.open()
    # Nothing should be queued yet; drain anything left from an earlier test anyway.
    for batch in cap.batches():
        if not len(batch):
            break
    return cap


def mixed_frames(src: str, dst: str) -> list[tuple[bytes, dict]]:
    """Frames with the fields decode_packets must find in them."""
    out = []
    for i in range(60):
        pay = b"u" * (i * 7)
        out.append((bytes(Ether(**ETH) / IP(src=src, dst=dst) / UDP(sport=20000 + i, dport=5683) / Raw(pay)),
                    dict(proto=17, sport=20000 + i, dport=5683, tcp_flags=0, payload_len=len(pay))))
        pay = b"\x30\x0a\x00\x03a/b" + b"t" * i
        out.append((bytes(Ether(**ETH) / IP(src=src, dst=dst) / TCP(sport=41000 + i, dport=1883, flags="PA", seq=i * 1000) / Raw(pay)),
                    dict(proto=6, sport=41000 + i, dport=1883, tcp_flags=TCP_PSH | TCP_ACK, seq=i * 1000, payload_len=len(pay))))
        out.append((bytes(Ether(**ETH) / IP(src=src, dst=dst) / TCP(sport=42000 + i, dport=80 + i, flags="S")),
                    dict(proto=6, sport=42000 + i, dport=80 + i, tcp_flags=TCP_SYN, payload_len=0)))
    out.append((bytes(Ether(**ETH) / IP(src=src, dst=dst) / ICMP(type=8) / Raw(b"p" * 1400)),
                dict(proto=1, sport=8, dport=0, payload_len=1400)))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_sees_exactly_the_frames_sent(net, backend):
    the_lab, dev = net
    sent = mixed_frames(dev.ip, the_lab.gw_ip)
    cap = open_capture(net, backend=backend)
    try:
        assert cap.backend == backend and cap.linktype == LINKTYPE_ETHERNET
        send(dev, [f for f, _ in sent])
        frames, rows, book = collect(cap, len(sent))
        stats = cap.stats()
    finally:
        cap.close()
    assert [f for f, _ in frames] == [f for f, _ in sent]
    assert [w for _, w in frames] == [len(f) for f, _ in sent]
    assert (rows["ipver"] == 4).all()
    assert set(rows["src"]) == {book.key(dev.ip)} and set(rows["dst"]) == {book.key(the_lab.gw_ip)}
    for row, (_, exp) in zip(rows, sent):
        assert {k: int(row[k]) for k in exp} == exp
    ts = rows["ts"]
    assert (np.diff(ts) >= 0).all() and abs(ts[0] - time.time()) < 60
    assert stats["packets"] == len(sent) and stats["bytes"] == sum(len(f) for f, _ in sent)
    assert stats["kernel_packets"] == len(sent) and stats["kernel_drops"] == 0
    assert stats["backend"] == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_bpf_filter_runs_in_the_kernel(net, backend):
    the_lab, dev = net
    sent = mixed_frames(dev.ip, the_lab.gw_ip)
    wanted = [f for f, exp in sent if exp["proto"] == 6 and exp["dport"] == 1883]
    cap = open_capture(net, backend=backend, bpf="tcp dst port 1883")
    try:
        send(dev, [f for f, _ in sent])
        frames, rows, _ = collect(cap, len(wanted))
        stats = cap.stats()
    finally:
        cap.close()
    assert [f for f, _ in frames] == wanted
    assert set(rows["dport"]) == {1883}
    # The kernel counts only what passed the filter: the rest never reached the socket.
    assert stats["kernel_packets"] == len(wanted) == stats["packets"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_snaplen_is_applied_by_the_kernel(net, backend):
    the_lab, dev = net
    frame = bytes(Ether(**ETH) / IP(src=dev.ip, dst=the_lab.gw_ip) / TCP(sport=5, dport=1883, flags="PA") / Raw(b"z" * 1000))
    cap = open_capture(net, backend=backend, snaplen=100)
    try:
        send(dev, [frame] * 5)
        frames, rows, _ = collect(cap, 5)
    finally:
        cap.close()
    assert frames == [(frame[:100], len(frame))] * 5
    assert rows["payload_len"].tolist() == [100 - 54] * 5
    assert rows["payload_wirelen"].tolist() == [1000] * 5
    assert rows["dport"].tolist() == [1883] * 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_capture_keeps_yielding_empty_batches(net, backend):
    cap = open_capture(net, backend=backend, timeout=0.05)
    try:
        empties = 0
        start = time.monotonic()
        for batch in cap.batches():
            assert len(batch) == 0 and batch.linktype == LINKTYPE_ETHERNET
            empties += 1
            if empties == 5 or time.monotonic() - start > 10:
                break
        assert empties == 5
        assert cap.stats()["idle_batches"] >= 5
    finally:
        cap.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tun_interface_is_captured_as_raw_ip(net, backend):
    # A tun device has no link header: the capture reads it from the IP header on (raw IP).
    the_lab, _ = net
    name = f"t{the_lab.id}{backend[0]}"
    with lab.in_netns(the_lab.gw):
        fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))  # TUNSETIFF: TUN, NO_PI
        for argv in (["addr", "add", "10.88.0.1/24", "dev", name], ["link", "set", name, "up"]):
            assert the_lab.run(the_lab.gw, ["ip", *argv]).returncode == 0
        cap = LiveCapture(name, netns=the_lab.gw, backend=backend, timeout=0.15)
        with cap:
            assert cap.linktype == LINKTYPE_RAW
            # RSTs to the tun's own address: the stack drops them without answering.
            sent = [bytes(IP(src="10.88.0.2", dst="10.88.0.1") / TCP(sport=3000 + i, dport=1883, flags="R")) for i in range(20)]
            for pkt in sent:
                os.write(fd, pkt)
            frames, rows, _ = collect(cap, len(sent))
    finally:
        os.close(fd)
    assert [f for f, _ in frames] == sent
    assert rows["sport"].tolist() == [3000 + i for i in range(20)] and (rows["ipver"] == 4).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_loopback_packets_are_captured_once(net, backend):
    # On lo each packet is seen leaving and arriving; the capture keeps one copy (as libpcap).
    the_lab, _ = net
    with LiveCapture("lo", bpf="udp port 9999", netns=the_lab.gw, backend=backend, timeout=0.15) as cap:
        with lab.in_netns(the_lab.gw):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(10):
                udp.sendto(b"n%d" % i, ("127.0.0.1", 9999))
        finally:
            udp.close()
        frames, rows, _ = collect(cap, 10)
    assert len(frames) == 10
    assert [bytes(f[-2:]) for f, _ in frames] == [b"n%d" % i for i in range(10)]
    assert set(rows["dport"]) == {9999}


def test_ring_counts_kernel_drops_when_the_reader_falls_behind(net):
    the_lab, dev = net
    frame = bytes(Ether(**ETH) / IP(src=dev.ip, dst=the_lab.gw_ip) / UDP(sport=1, dport=2) / Raw(b"d" * 1000))
    # Two one-page blocks hold a handful of 1 KB frames; send many more before reading any.
    cap = open_capture(net, backend="ring", ring_blocks=2, block_size=4096, block_timeout_ms=5)
    try:
        send(dev, [frame] * 300)
        frames, _, _ = collect(cap, 1)
        stats = cap.stats()
    finally:
        cap.close()
    assert 0 < len(frames) < 300
    assert stats["kernel_drops"] > 0
    assert stats["kernel_packets"] == 300  # the kernel's count includes what it dropped
    assert stats["packets"] + stats["kernel_drops"] == 300


def test_socket_counts_kernel_drops_when_the_buffer_is_full(net):
    the_lab, dev = net
    frame = bytes(Ether(**ETH) / IP(src=dev.ip, dst=the_lab.gw_ip) / UDP(sport=1, dport=2) / Raw(b"d" * 1000))
    cap = open_capture(net, backend="socket", rcvbuf=8192)
    try:
        send(dev, [frame] * 300)
        frames, _, _ = collect(cap, 1)
        stats = cap.stats()
    finally:
        cap.close()
    assert stats["kernel_drops"] > 0
    assert stats["packets"] == len(frames) and stats["packets"] + stats["kernel_drops"] == 300


def test_ring_refused_by_the_kernel_falls_back_to_recv_into(net, caplog):
    the_lab, dev = net
    # 2 blocks of 2 GiB overflow the kernel's size check: PACKET_RX_RING fails with EINVAL.
    cap = open_capture(net, backend="ring", block_size=1 << 31, ring_blocks=2)
    try:
        assert cap.backend == "socket" and "ring unavailable" in cap.fallback_reason
        frame = bytes(Ether(**ETH) / IP(src=dev.ip, dst=the_lab.gw_ip) / UDP(sport=3, dport=4))
        send(dev, [frame] * 3)
        frames, _, _ = collect(cap, 3)
    finally:
        cap.close()
    assert [f for f, _ in frames] == [frame] * 3
    assert "ring unavailable" in caplog.text


def test_bad_filter_interface_namespace_and_backend(net):
    the_lab, dev = net
    with pytest.raises(ValueError, match=r"bpf filter 'tcp prot 1883'"):
        LiveCapture(dev.veth_gw, bpf="tcp prot 1883", netns=the_lab.gw).open()
    with pytest.raises(ValueError, match=r"capture interface 'nosuch0'"):
        LiveCapture("nosuch0", netns=the_lab.gw).open()
    with pytest.raises(ValueError, match=r"capture interface '.*': .*No such device"):
        LiveCapture(dev.veth_gw).open()  # exists only inside the lab namespace
    with pytest.raises(ValueError, match=r"network namespace 'atlas-none-xyz'"):
        LiveCapture(dev.veth_gw, netns="atlas-none-xyz").open()
    with pytest.raises(ValueError, match="backend must be one of"):
        LiveCapture(dev.veth_gw, backend="pcap")
    with pytest.raises(RuntimeError, match="before open"):
        next(LiveCapture(dev.veth_gw).batches())


def test_stop_ends_batches_and_close_is_idempotent(net):
    cap = open_capture(net, backend="ring", timeout=0.05)
    n = 0
    for _ in cap.batches():
        n += 1
        cap.stop()
    assert n == 1
    cap.close()
    cap.close()
