"""`ChronosError`: every failed call, with the gRPC status code and the server's message."""

from __future__ import annotations

from typing import Optional

import grpc

#: Trailing-metadata key with which the server names the leader on UNAVAILABLE.
LEADER_HINT = "chronos-leader"
#: Trailing-metadata key with which the server names the field of an INVALID_ARGUMENT.
FIELD = "chronos-field"


class ChronosError(Exception):
    """A call the server (or the transport) refused.

    Attributes:
        code: the `grpc.StatusCode`, e.g. `grpc.StatusCode.INVALID_ARGUMENT`.
        message: the server's message; for bad input it starts with the
            field, e.g. ``event.topic: "__x" starts with "__", which is reserved``.
        leader: the leader hint the server sent with UNAVAILABLE, if any.
        field: the request field an INVALID_ARGUMENT is about (e.g.
            ``event.topic``, ``events[3].payload``), if the server named one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        leader: Optional[str] = None,
        field: Optional[str] = None,
    ):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.leader = leader
        self.field = field

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "ChronosError":
        """Wraps the `grpc.RpcError` a stub raised (a `grpc.Call` carries code and details)."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        found = {}
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailers or ():
            if key in (LEADER_HINT, FIELD):
                found[key] = value
        return cls(code or grpc.StatusCode.UNKNOWN, message or "", found.get(LEADER_HINT), found.get(FIELD))
