"""Manifests <-> protobuf: the Kubernetes-shaped YAML/JSON edge of cowpod.

    docs = load_paths(["hello.yaml"], sys.stdin)     # decode + check every document
    pod = docs[0].obj                                 # a cowpod.v1 Pod
    print(to_yaml(pod))                               # back to the Kubernetes shape

Field names are the protos' camelCase JSON names; quantities are Kubernetes
strings (`500m`, `64Mi`); times are RFC 3339. Errors name the file, the
document and the field path. Imports only `cowpod.v1` and `cowpod.api`.
"""

from cowpod.manifest.decode import decode_into
from cowpod.manifest.encode import encode_message, encode_object, user_owned
from cowpod.manifest.errors import FieldError, ManifestError
from cowpod.manifest.kinds import BY_KIND, KINDS, KindInfo, by_alias, of_message
from cowpod.manifest.loader import Document, decode_object, load_paths, load_text
from cowpod.manifest.render import as_list, dump_json, dump_yaml, to_json, to_yaml
from cowpod.manifest.timefmt import format_rfc3339, parse_rfc3339

__all__ = [
    "BY_KIND",
    "KINDS",
    "Document",
    "FieldError",
    "KindInfo",
    "ManifestError",
    "as_list",
    "by_alias",
    "decode_into",
    "decode_object",
    "dump_json",
    "dump_yaml",
    "encode_message",
    "encode_object",
    "format_rfc3339",
    "load_paths",
    "load_text",
    "of_message",
    "parse_rfc3339",
    "to_json",
    "to_yaml",
    "user_owned",
]
