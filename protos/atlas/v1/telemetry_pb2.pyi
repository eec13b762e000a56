from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_NONE: _ClassVar[Codec]
    CODEC_ZSTD: _ClassVar[Codec]
CODEC_UNSPECIFIED: Codec
CODEC_NONE: Codec
CODEC_ZSTD: Codec

class Hello(_message.Message):
    __slots__ = ("gateway_id", "software_version", "model_versions", "capabilities", "board", "protocol_version", "domain", "district", "subnet")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    BOARD_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DISTRICT_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    software_version: str
    model_versions: _containers.ScalarMap[str, str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    board: str
    protocol_version: int
    domain: str
    district: str
    subnet: str
    def __init__(self, gateway_id: _Optional[str] = ..., software_version: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., board: _Optional[str] = ..., protocol_version: _Optional[int] = ..., domain: _Optional[str] = ..., district: _Optional[str] = ..., subnet: _Optional[str] = ...) -> None: ...

class Incident(_message.Message):
    __slots__ = ("id", "kind", "src_ip", "dst_ip", "device", "gateway", "time", "last_seen", "score", "model_version", "packets", "state", "evidence_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SRC_IP_FIELD_NUMBER: _ClassVar[int]
    DST_IP_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    src_ip: str
    dst_ip: str
    device: str
    gateway: str
    time: float
    last_seen: float
    score: float
    model_version: str
    packets: int
    state: str
    evidence_json: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., src_ip: _Optional[str] = ..., dst_ip: _Optional[str] = ..., device: _Optional[str] = ..., gateway: _Optional[str] = ..., time: _Optional[float] = ..., last_seen: _Optional[float] = ..., score: _Optional[float] = ..., model_version: _Optional[str] = ..., packets: _Optional[int] = ..., state: _Optional[str] = ..., evidence_json: _Optional[str] = ...) -> None: ...

class DeviceSummary(_message.Message):
    __slots__ = ("device", "address", "start", "end", "packets", "bytes", "features", "schema_version")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    device: str
    address: str
    start: float
    end: float
    packets: int
    bytes: int
    features: _containers.RepeatedScalarFieldContainer[float]
    schema_version: int
    def __init__(self, device: _Optional[str] = ..., address: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ..., features: _Optional[_Iterable[float]] = ..., schema_version: _Optional[int] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("time", "packets_per_s", "kernel_drops", "cpu_percent", "cpu_budget", "shedding_level", "open_incidents", "spool_depth", "spool_dropped", "model_versions")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    PACKETS_PER_S_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROPS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPU_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SHEDDING_LEVEL_FIELD_NUMBER: _ClassVar[int]
    OPEN_INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    time: float
    packets_per_s: float
    kernel_drops: int
    cpu_percent: float
    cpu_budget: float
    shedding_level: int
    open_incidents: int
    spool_depth: int
    spool_dropped: int
    model_versions: _containers.ScalarMap[str, str]
    def __init__(self, time: _Optional[float] = ..., packets_per_s: _Optional[float] = ..., kernel_drops: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., cpu_budget: _Optional[float] = ..., shedding_level: _Optional[int] = ..., open_incidents: _Optional[int] = ..., spool_depth: _Optional[int] = ..., spool_dropped: _Optional[int] = ..., model_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("seq", "time", "incidents", "devices", "health")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    incidents: _containers.RepeatedCompositeFieldContainer[Incident]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceSummary]
    health: Health
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., incidents: _Optional[_Iterable[_Union[Incident, _Mapping]]] = ..., devices: _Optional[_Iterable[_Union[DeviceSummary, _Mapping]]] = ..., health: _Optional[_Union[Health, _Mapping]] = ...) -> None: ...

class TelemetryEnvelope(_message.Message):
    __slots__ = ("seq", "codec", "payload", "raw_size")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    codec: Codec
    payload: bytes
    raw_size: int
    def __init__(self, seq: _Optional[int] = ..., codec: _Optional[_Union[Codec, str]] = ..., payload: _Optional[bytes] = ..., raw_size: _Optional[int] = ...) -> None: ...
