"""Generated protobuf and gRPC code for the cowpod.v1 API (see proto/cowpod/v1).

Do not edit: run `python scripts/genproto.py`. tests/unit/test_proto_fresh.py
fails when these files are stale against the .proto sources.
"""
