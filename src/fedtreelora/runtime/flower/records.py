"""A request or reply as one Flower message: a JSON text and one packed state (``wire.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

if TYPE_CHECKING:
    from ...adapters import State


def content(data: Mapping[str, Any], state: State | None = None) -> RecordDict:
    """``data`` as JSON; ``state`` as one raw byte buffer, its spec beside the data."""
    spec: list[Any] = []
    buffer = b""
    if state:  # torch is imported only where a state travels: a node's query handler stays light
        from ... import wire

        spec, buffer = wire.pack_state(state)
    return raw_content({**data, "spec": spec}, buffer)


def raw_content(data: Mapping[str, Any], buffer: bytes) -> RecordDict:
    """A message's content from JSON data that already holds its state's ``spec``, and the state's buffer."""
    flat = Array(dtype="uint8", shape=(len(buffer),), stype="raw", data=buffer)  # no np.save copy
    return RecordDict(
        {"json": ConfigRecord({"text": json.dumps(data)}), "state": ArrayRecord({"flat": flat})}
    )


def read_raw(message: Message) -> tuple[dict[str, Any], bytes]:
    """The JSON data (with the state's ``spec``) and the state's buffer, unpacked by nobody yet."""
    data: dict[str, Any] = json.loads(str(message.content.config_records["json"]["text"]))
    return data, bytes(message.content.array_records["state"]["flat"].data)


def read(message: Message) -> tuple[dict[str, Any], State]:
    """The JSON data and the state of a message written by ``content``."""
    from ... import wire

    data, buffer = read_raw(message)
    return data, wire.unpack_state(data.pop("spec"), buffer)
