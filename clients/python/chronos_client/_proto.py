"""The generated protobuf and gRPC modules, importable as `chronos.v1`.

`pip install ./clients/python` generates them into the installed package's
`_pb/`; in a source checkout `generate.sh` writes them to `_pb/` beside this
file. protoc names a module
after its proto path, so the generated code imports `chronos.v1.events_pb2`;
putting `_pb/` first on `sys.path` makes those imports resolve to these files.
"""

from __future__ import annotations

import os
import sys

_PB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pb")

if not os.path.isfile(os.path.join(_PB_DIR, "chronos", "v1", "events_pb2.py")):
    raise ImportError(
        f"chronos_client: no generated code in {_PB_DIR}; install the package "
        "(pip install ./clients/python) or run clients/python/generate.sh"
    )
if _PB_DIR not in sys.path:
    sys.path.insert(0, _PB_DIR)

from chronos.v1 import admin_pb2, admin_pb2_grpc, events_pb2, events_pb2_grpc  # noqa: E402

__all__ = ["admin_pb2", "admin_pb2_grpc", "events_pb2", "events_pb2_grpc"]
