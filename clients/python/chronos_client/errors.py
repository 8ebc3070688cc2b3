"""`ChronosError`: every failed call, with the gRPC status code and the server's message."""

from __future__ import annotations

from typing import Optional

import grpc

#: Trailing-metadata key with which the server names the leader on UNAVAILABLE.
LEADER_HINT = "chronos-leader"


class ChronosError(Exception):
    """A call the server (or the transport) refused.

    Attributes:
        code: the `grpc.StatusCode`, e.g. `grpc.StatusCode.INVALID_ARGUMENT`.
        message: the server's message; for bad input it starts with the
            field, e.g. ``event.topic: "__x" starts with "__", which is reserved``.
        leader: the leader hint the server sent with UNAVAILABLE, if any.
    """

    def __init__(self, code: grpc.StatusCode, message: str, leader: Optional[str] = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.leader = leader

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "ChronosError":
        """Wraps the `grpc.RpcError` a stub raised (a `grpc.Call` carries code and details)."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        leader = None
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailers or ():
            if key == LEADER_HINT:
                leader = value
        return cls(code or grpc.StatusCode.UNKNOWN, message or "", leader)
