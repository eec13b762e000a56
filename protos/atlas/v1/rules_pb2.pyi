from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_QUARANTINE: _ClassVar[Action]
    ACTION_FILTER: _ClassVar[Action]
    ACTION_RATE_LIMIT: _ClassVar[Action]
    ACTION_REVOKE_MQTT: _ClassVar[Action]
ACTION_UNSPECIFIED: Action
ACTION_QUARANTINE: Action
ACTION_FILTER: Action
ACTION_RATE_LIMIT: Action
ACTION_REVOKE_MQTT: Action

class RuleParams(_message.Message):
    __slots__ = ("port", "proto", "pps")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    PPS_FIELD_NUMBER: _ClassVar[int]
    port: int
    proto: str
    pps: int
    def __init__(self, port: _Optional[int] = ..., proto: _Optional[str] = ..., pps: _Optional[int] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("id", "action", "target", "expires_at", "reason", "decision_id", "shadow", "params")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    action: Action
    target: str
    expires_at: float
    reason: str
    decision_id: str
    shadow: bool
    params: RuleParams
    def __init__(self, id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., target: _Optional[str] = ..., expires_at: _Optional[float] = ..., reason: _Optional[str] = ..., decision_id: _Optional[str] = ..., shadow: _Optional[bool] = ..., params: _Optional[_Union[RuleParams, _Mapping]] = ...) -> None: ...

class SignedRule(_message.Message):
    __slots__ = ("rule", "signature")
    RULE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    signature: bytes
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RuleChange(_message.Message):
    __slots__ = ("kind", "rules", "withdrawn")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[RuleChange.Kind]
        KIND_SNAPSHOT: _ClassVar[RuleChange.Kind]
        KIND_UPSERT: _ClassVar[RuleChange.Kind]
        KIND_WITHDRAW: _ClassVar[RuleChange.Kind]
    KIND_UNSPECIFIED: RuleChange.Kind
    KIND_SNAPSHOT: RuleChange.Kind
    KIND_UPSERT: RuleChange.Kind
    KIND_WITHDRAW: RuleChange.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    kind: RuleChange.Kind
    rules: _containers.RepeatedCompositeFieldContainer[SignedRule]
    withdrawn: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[RuleChange.Kind, str]] = ..., rules: _Optional[_Iterable[_Union[SignedRule, _Mapping]]] = ..., withdrawn: _Optional[_Iterable[str]] = ...) -> None: ...

class RuleAck(_message.Message):
    __slots__ = ("rule_id", "applied", "error")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    applied: bool
    error: str
    def __init__(self, rule_id: _Optional[str] = ..., applied: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class RuleAcks(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[RuleAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[RuleAck, _Mapping]]] = ...) -> None: ...

class ModelUpdate(_message.Message):
    __slots__ = ("name", "version", "content", "signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    content: bytes
    signature: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., content: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ModelAck(_message.Message):
    __slots__ = ("name", "version", "applied", "error", "model_versions")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    applied: bool
    error: str
    model_versions: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., applied: _Optional[bool] = ..., error: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...
