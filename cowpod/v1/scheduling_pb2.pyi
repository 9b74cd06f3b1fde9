from cowpod.v1 import meta_pb2 as _meta_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriorityClass(_message.Message):
    __slots__ = ("api_version", "kind", "metadata", "value", "global_default", "preemption_policy", "description")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    metadata: _meta_pb2.ObjectMeta
    value: int
    global_default: bool
    preemption_policy: str
    description: str
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., metadata: _Optional[_Union[_meta_pb2.ObjectMeta, _Mapping]] = ..., value: _Optional[int] = ..., global_default: _Optional[bool] = ..., preemption_policy: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PriorityClassList(_message.Message):
    __slots__ = ("items", "resource_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PriorityClass]
    resource_version: int
    def __init__(self, items: _Optional[_Iterable[_Union[PriorityClass, _Mapping]]] = ..., resource_version: _Optional[int] = ...) -> None: ...

class PriorityClassWatchEvent(_message.Message):
    __slots__ = ("type", "object", "resource_version", "batch")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    type: _meta_pb2.WatchEventType
    object: PriorityClass
    resource_version: int
    batch: _containers.RepeatedCompositeFieldContainer[PriorityClassWatchEvent]
    def __init__(self, type: _Optional[_Union[_meta_pb2.WatchEventType, str]] = ..., object: _Optional[_Union[PriorityClass, _Mapping]] = ..., resource_version: _Optional[int] = ..., batch: _Optional[_Iterable[_Union[PriorityClassWatchEvent, _Mapping]]] = ...) -> None: ...
