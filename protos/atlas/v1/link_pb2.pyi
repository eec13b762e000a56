from atlas.v1 import rules_pb2 as _rules_pb2
from atlas.v1 import telemetry_pb2 as _telemetry_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "telemetry", "rule_acks", "model_ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    RULE_ACKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ACK_FIELD_NUMBER: _ClassVar[int]
    hello: _telemetry_pb2.Hello
    telemetry: _telemetry_pb2.TelemetryEnvelope
    rule_acks: _rules_pb2.RuleAcks
    model_ack: _rules_pb2.ModelAck
    def __init__(self, hello: _Optional[_Union[_telemetry_pb2.Hello, _Mapping]] = ..., telemetry: _Optional[_Union[_telemetry_pb2.TelemetryEnvelope, _Mapping]] = ..., rule_acks: _Optional[_Union[_rules_pb2.RuleAcks, _Mapping]] = ..., model_ack: _Optional[_Union[_rules_pb2.ModelAck, _Mapping]] = ...) -> None: ...

class TelemetryAck(_message.Message):
    __slots__ = ("seq", "refused", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    refused: int
    error: str
    def __init__(self, seq: _Optional[int] = ..., refused: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("rule_change", "model_update", "telemetry_ack")
    RULE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_UPDATE_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_ACK_FIELD_NUMBER: _ClassVar[int]
    rule_change: _rules_pb2.RuleChange
    model_update: _rules_pb2.ModelUpdate
    telemetry_ack: TelemetryAck
    def __init__(self, rule_change: _Optional[_Union[_rules_pb2.RuleChange, _Mapping]] = ..., model_update: _Optional[_Union[_rules_pb2.ModelUpdate, _Mapping]] = ..., telemetry_ack: _Optional[_Union[TelemetryAck, _Mapping]] = ...) -> None: ...
