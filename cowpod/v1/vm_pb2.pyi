import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from cowpod.v1 import meta_pb2 as _meta_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VMSpec(_message.Message):
    __slots__ = ("class_name", "cpu_millis", "memory_bytes", "parent", "image", "provider", "node_labels", "template", "paused")
    class NodeLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NODE_LABELS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    cpu_millis: int
    memory_bytes: int
    parent: str
    image: str
    provider: str
    node_labels: _containers.ScalarMap[str, str]
    template: bool
    paused: bool
    def __init__(self, class_name: _Optional[str] = ..., cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., parent: _Optional[str] = ..., image: _Optional[str] = ..., provider: _Optional[str] = ..., node_labels: _Optional[_Mapping[str, str]] = ..., template: _Optional[bool] = ..., paused: _Optional[bool] = ...) -> None: ...

class VMStatus(_message.Message):
    __slots__ = ("phase", "node_name", "ip", "provider_id", "requested_at", "created_at", "ready_at", "snapped_free", "children", "clone_kind", "message", "hostname", "machine_id")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPPED_FREE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    CLONE_KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    phase: str
    node_name: str
    ip: str
    provider_id: str
    requested_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    ready_at: _timestamp_pb2.Timestamp
    snapped_free: bool
    children: _containers.RepeatedScalarFieldContainer[str]
    clone_kind: str
    message: str
    hostname: str
    machine_id: str
    def __init__(self, phase: _Optional[str] = ..., node_name: _Optional[str] = ..., ip: _Optional[str] = ..., provider_id: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapped_free: _Optional[bool] = ..., children: _Optional[_Iterable[str]] = ..., clone_kind: _Optional[str] = ..., message: _Optional[str] = ..., hostname: _Optional[str] = ..., machine_id: _Optional[str] = ...) -> None: ...

class VM(_message.Message):
    __slots__ = ("api_version", "kind", "metadata", "spec", "status")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    metadata: _meta_pb2.ObjectMeta
    spec: VMSpec
    status: VMStatus
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., metadata: _Optional[_Union[_meta_pb2.ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[VMSpec, _Mapping]] = ..., status: _Optional[_Union[VMStatus, _Mapping]] = ...) -> None: ...

class VMList(_message.Message):
    __slots__ = ("items", "resource_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[VM]
    resource_version: int
    def __init__(self, items: _Optional[_Iterable[_Union[VM, _Mapping]]] = ..., resource_version: _Optional[int] = ...) -> None: ...

class VMWatchEvent(_message.Message):
    __slots__ = ("type", "object", "resource_version", "batch")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    type: _meta_pb2.WatchEventType
    object: VM
    resource_version: int
    batch: _containers.RepeatedCompositeFieldContainer[VMWatchEvent]
    def __init__(self, type: _Optional[_Union[_meta_pb2.WatchEventType, str]] = ..., object: _Optional[_Union[VM, _Mapping]] = ..., resource_version: _Optional[int] = ..., batch: _Optional[_Iterable[_Union[VMWatchEvent, _Mapping]]] = ...) -> None: ...

class CloneRequest(_message.Message):
    __slots__ = ("parent", "count", "names", "node_labels")
    class NodeLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARENT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    NODE_LABELS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    count: int
    names: _containers.RepeatedScalarFieldContainer[str]
    node_labels: _containers.ScalarMap[str, str]
    def __init__(self, parent: _Optional[str] = ..., count: _Optional[int] = ..., names: _Optional[_Iterable[str]] = ..., node_labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CloneResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[VM]
    def __init__(self, items: _Optional[_Iterable[_Union[VM, _Mapping]]] = ...) -> None: ...

class SetPausedRequest(_message.Message):
    __slots__ = ("key", "paused")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    key: _meta_pb2.ObjectKey
    paused: bool
    def __init__(self, key: _Optional[_Union[_meta_pb2.ObjectKey, _Mapping]] = ..., paused: _Optional[bool] = ...) -> None: ...
