"""Which node a `Client` talks to, and the retry loop every call goes through.

The client is given one or more nodes. Calls go to the current one; a call
that failed with UNAVAILABLE or DEADLINE_EXCEEDED (a node down or
restarting, a partition between leaders) is tried again with backoff within
a `RetryPolicy`, on the node the server named as leader or else on the next
address, as the Rust SDK does. Only idempotent calls are retried: a publish
is, because the server deduplicates by (topic, message_id); another call
that failed so is not, but the next call goes to the next node.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from ._proto import admin_pb2, admin_pb2_grpc, events_pb2_grpc
from .errors import ChronosError

#: Failures that may pass on another attempt or another node.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# grpc's own reconnect backoff starts at 1 s and grows to 120 s; while it
# waits, calls on the channel fail at once. A node back after a restart
# should be reachable again within a retry budget's few seconds.
# Pings every 10 s, answered within 5 s (as the Rust SDK): a node that went
# away without closing the connection (a host down or cut off, a frozen
# process) fails its calls and streams within 15 s, not when TCP gives up,
# and a member that waits for deliveries on an idle stream is not left
# hanging (grpc stops pinging after two pings without data unless told,
# and waits a minute for a ping's answer unless told).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", 5_000),
]

# How long a leader hint's address lookup (`ClusterStatus`) may take.
LOOKUP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and for how long a call (or a subscription) is tried again.

    Attempt n (from 1) is followed by a wait of `initial_backoff_s * 2^(n-1)`,
    capped at `max_backoff_s`, with equal jitter (half fixed, half random).
    Retrying stops after `max_attempts` attempts or once the next wait would
    end past `max_elapsed_s` from the first, and the last error is raised.
    """

    max_attempts: int = 10
    max_elapsed_s: float = 15.0
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: {self.max_attempts} must be at least 1")
        if self.max_elapsed_s < 0:
            raise ValueError(f"max_elapsed_s: {self.max_elapsed_s} is negative")
        if self.initial_backoff_s <= 0:
            raise ValueError(f"initial_backoff_s: {self.initial_backoff_s} must be positive")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s: {self.max_backoff_s} is below initial_backoff_s {self.initial_backoff_s}"
            )

    @classmethod
    def none(cls) -> "RetryPolicy":
        """A policy that never tries again."""
        return cls(max_attempts=1)

    def backoff_s(self, attempt: int) -> float:
        """The wait after attempt `attempt` (1-based) failed."""
        full = min(self.initial_backoff_s * 2 ** min(attempt - 1, 20), self.max_backoff_s)
        return full / 2 + random.uniform(0, full / 2)


class Budget:
    """One retry loop's progress against its policy."""

    def __init__(self, policy: RetryPolicy):
        self._policy = policy
        self._started = time.monotonic()
        self.attempts = 0

    def next_wait(self) -> Optional[float]:
        """Records a failed attempt; the wait before the next, or None when spent."""
        self.attempts += 1
        if self.attempts >= self._policy.max_attempts:
            return None
        wait = self._policy.backoff_s(self.attempts)
        if time.monotonic() - self._started + wait > self._policy.max_elapsed_s:
            return None
        return wait


def addresses(addr: Union[str, Sequence[str]]) -> List[str]:
    """`host:port`, several comma-separated, or a list of them."""
    given = addr.split(",") if isinstance(addr, str) else list(addr)
    out = [a.strip() for a in given if isinstance(a, str) and a.strip()]
    if len(out) != len(given) or not out:
        raise ValueError(f"addr: {addr!r} is not host:port, several comma-separated, or a list of them")
    return out


@dataclass
class Node:
    """The channel to one address and its stubs."""

    addr: str
    raw: grpc.Channel
    events: events_pb2_grpc.EventServiceStub
    admin: admin_pb2_grpc.AdminServiceStub


class Rpc:
    """Names one method of one service; `Connection.call` runs it on the current node."""

    __slots__ = ("service", "method")

    def __init__(self, service: str, method: str):
        self.service = service
        self.method = method


class Service:
    """`service.Method` is an `Rpc` (call sites read like stub calls)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, method: str) -> Rpc:
        return Rpc(self._name, method)


class Connection:
    """The node calls go to now. `generation` changes each time it is
    replaced, so concurrent failures on one node move the client on once."""

    def __init__(
        self,
        addrs: List[str],
        open_channel: Callable[[str], Tuple[grpc.Channel, grpc.Channel]],
        retry: RetryPolicy,
    ):
        self.addrs = addrs
        self.retry = retry
        self._open_channel = open_channel
        self._lock = threading.Lock()
        # Every channel opened, by address: a node given up on may be the
        # one to come back to, and a subscription may still use it.
        self._nodes: Dict[str, Node] = {}
        self._index = 0
        self._generation = 0
        self._current = self._node(addrs[0])
        self._closed = False

    def _node(self, addr: str) -> Node:
        node = self._nodes.get(addr)
        if node is None:
            raw, channel = self._open_channel(addr)
            node = Node(addr, raw, events_pb2_grpc.EventServiceStub(channel), admin_pb2_grpc.AdminServiceStub(channel))
            self._nodes[addr] = node
        return node

    def current(self) -> Tuple[int, Node]:
        with self._lock:
            return self._generation, self._current

    def fail_over(self, generation: int, err: ChronosError) -> None:
        """After `err` on the node of `generation`: move to the node the
        server named as leader, else to the next address."""
        with self._lock:
            if generation != self._generation or self._closed:
                return  # another caller already moved on
            current = self._current
        leader = self._leader_addr(current, err.leader) if err.leader else None
        with self._lock:
            if generation != self._generation or self._closed:
                return
            if leader is None:
                self._index = (self._index + 1) % len(self.addrs)
            self._current = self._node(leader or self.addrs[self._index])
            self._generation += 1

    @staticmethod
    def _leader_addr(node: Node, leader: str) -> Optional[str]:
        """The API address of node `leader`, from `ClusterStatus`."""
        try:
            status = node.admin.ClusterStatus(admin_pb2.ClusterStatusRequest(), timeout=LOOKUP_TIMEOUT_S)
        except grpc.RpcError as err:
            err.__traceback__ = None
            return None
        for n in status.nodes:
            if str(n.id) == leader and n.api_addr:
                return n.api_addr
        return None

    def call(self, rpc: Rpc, req, timeout_s: Optional[float], idempotent: bool = True, deletes: bool = False):
        """Runs `rpc` on the current node; an idempotent one is tried again
        on a retryable failure within the retry policy, failing over between tries.
        A call that `deletes` returns None when a retry finds nothing to delete:
        the unanswered attempt before it may have deleted it."""
        budget = Budget(self.retry)
        retried = False
        while True:
            generation, node = self.current()
            method = getattr(getattr(node, rpc.service), rpc.method)
            try:
                return method(req, timeout=timeout_s)
            except grpc.RpcError as rpc_err:
                err = ChronosError.from_rpc_error(rpc_err)
                # The error is the call; its traceback holds a frame that
                # holds the call (see `Subscription.close`).
                rpc_err.__traceback__ = None
            if deletes and retried and err.code == grpc.StatusCode.NOT_FOUND:
                return None
            if err.code not in RETRYABLE:
                raise err
            # A call not retried still moves the client on: the next goes elsewhere.
            self.fail_over(generation, err)
            wait = budget.next_wait() if idempotent else None
            if wait is None:
                raise err
            time.sleep(wait)
            retried = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            nodes = list(self._nodes.values())
        for node in nodes:
            node.raw.close()
