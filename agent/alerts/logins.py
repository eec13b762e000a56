"""Accepted MQTT logins per client address: the evidence that a credential is in use.

The hub revokes an MQTT identity that an attacker presents only when the broker accepted a
login with it from the attacker's address (atlas.link.incidents.LOGINS_ACCEPTED); a failed
guess compromises nothing. This stage counts CONNACKs with return code 0 by the address of the
client they answer and the client id of that connection, so an incident can carry them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np

from atlas.agent.decode import CONNACK, MQTT_OK

MAX_ADDRESSES = 10_000  # bounded: the least recently seen address is forgotten first
MAX_IDS_PER_ADDRESS = 16  # one host cycling through ids keeps its first 16


class AcceptedLogins:
    def __init__(self, max_addresses: int = MAX_ADDRESSES) -> None:
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, dict[str, int]] = OrderedDict()

    def observe(self, mqtt: np.ndarray, address_of: Callable[[int], str],
                client_id_of: Callable[[int, int], str | None]) -> list[str]:
        """Count the accepted logins among decoded MQTT messages; return the addresses that
        logged in (so open incidents from them can carry the news)."""
        if not len(mqtt):
            return []
        ok = (mqtt["mtype"] == CONNACK) & (mqtt["to_broker"] == 0) & (mqtt["return_code"] == 0) \
            & (mqtt["error"] == MQTT_OK)
        seen = []
        for row in mqtt[ok]:
            client_id = client_id_of(int(row["client"]), int(row["client_port"]))
            if client_id is None:  # the CONNECT was not seen (capture started mid-session)
                continue
            address = address_of(int(row["client"]))
            counts = self._by_address.setdefault(address, {})
            self._by_address.move_to_end(address)
            if client_id in counts or len(counts) < MAX_IDS_PER_ADDRESS:
                counts[client_id] = counts.get(client_id, 0) + 1
            seen.append(address)
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
        return list(dict.fromkeys(seen))

    def of(self, address: str) -> dict[str, int]:
        """{client id: accepted logins} from this address (a copy; {} if none)."""
        return dict(self._by_address.get(address, {}))
