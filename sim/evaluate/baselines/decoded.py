"""One gateway's capture decoded once, with the agent's own decoder, for the baselines.

The signature rules and the flow exporter of the centralized baseline both work on the same
rows the ATLAS agent sees: `PACKET_DTYPE` rows (atlas.agent.decode.packets) and `MQTT_DTYPE`
rows (atlas.agent.decode.streams). Only the columns the baselines use are kept, so a gateway's
hour of traffic stays a few tens of MB. Payload bytes are kept only for the few packets that a
content rule inspects (telnet), the way an IDS only buffers the streams its rules look into.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from atlas.agent.capture import FrameBatch
from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.decode import MQTT_DTYPE, PACKET_DTYPE
from atlas.agent.decode.packets import AddressBook, decode_packets
from atlas.agent.decode.streams import MqttStreams

MQTT_PORTS = (1883, 8883)
TELNET_PORTS = (23, 2323)
MAX_PAYLOAD_KEPT = 256  # bytes of each inspected payload (a login line fits)

PACKET_COLUMNS = ("ts", "ipver", "src", "dst", "proto", "sport", "dport", "tcp_flags", "wirelen")
MQTT_COLUMNS = ("ts", "client", "broker", "client_port", "to_broker", "mtype", "length", "error",
                "keepalive", "return_code", "wildcard", "sys_topic", "client_hash")


def _project(dtype: np.dtype, names: tuple[str, ...]) -> np.dtype:
    return np.dtype([(n, dtype.fields[n][0]) for n in names])


PACKETS = _project(PACKET_DTYPE, PACKET_COLUMNS)
MQTT = _project(MQTT_DTYPE, MQTT_COLUMNS)


@dataclass
class DecodedCapture:
    """Packets and MQTT messages of one gateway, in capture order."""

    gateway: str
    packets: np.ndarray  # PACKETS rows
    mqtt: np.ndarray  # MQTT rows
    book: AddressBook
    # Payloads of TCP packets to the inspected ports: packet row index -> first bytes.
    payloads: dict[int, bytes] = field(default_factory=dict)

    def name(self, key: int) -> str:
        return self.book.name(int(key))

    def key(self, address: str) -> int:
        return self.book.key(address)

    @property
    def start(self) -> float:
        return float(self.packets["ts"][0]) if len(self.packets) else 0.0

    @property
    def end(self) -> float:
        return float(self.packets["ts"][-1]) if len(self.packets) else 0.0


def decode_batches(batches: Iterable[FrameBatch], gateway: str = "",
                   inspect_ports: tuple[int, ...] = TELNET_PORTS) -> DecodedCapture:
    """Decode frame batches as the agent does (same decoder, same MQTT stream reassembly)."""
    book = AddressBook()
    streams = MqttStreams(ports=MQTT_PORTS)
    packets: list[np.ndarray] = []
    messages: list[np.ndarray] = []
    payloads: dict[int, bytes] = {}
    offset = 0
    for batch in batches:
        rows = decode_packets(batch, book)
        messages.append(_take(streams.feed(batch, rows), MQTT))
        inspected = np.flatnonzero((rows["proto"] == 6) & np.isin(rows["dport"], inspect_ports)
                                   & (rows["payload_len"] > 0))
        for i in inspected:
            start = int(rows["payload_off"][i])
            size = min(int(rows["payload_len"][i]), MAX_PAYLOAD_KEPT)
            payloads[offset + int(i)] = batch.buf[start:start + size].tobytes()
        packets.append(_take(rows, PACKETS))
        offset += len(rows)
    messages.append(_take(streams.flush(), MQTT))
    return DecodedCapture(gateway, _cat(packets, PACKETS), _cat(messages, MQTT), book, payloads)


def decode_capture(path: str | Path, gateway: str = "") -> DecodedCapture:
    """Decode one capture file (pcap or pcapng)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such capture")
    return decode_batches(read_capture(path), gateway or path.parent.name)


def _take(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(len(rows), dtype=dtype)
    for n in dtype.names:
        out[n] = rows[n]
    return out


def _cat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
