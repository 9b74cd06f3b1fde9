"""What every node has bound to it, kept from the pods watch (capacity-aware binding).

    etcd ──list pods + binding sequences──► NodeUsage.resync   (hub start, or after a reset)
    etcd ──pods watch──► WatchHub._dispatch ──► NodeUsage.observe(event)   (every pod change)

Per node: the summed requests of the pods that count on it (bound, not
terminal; `controller.capacity`), and the highest revision this process knows
of the node's *binding sequence* key `registry/bindseq/<node>`.

The binding sequence is what makes a capacity check globally correct with
several schedulers and several controller processes: every write that adds a
pod to a node (a bind, a create with `spec.nodeName`, a terminal pod becoming
live again) puts that node's sequence key in the same etcd transaction, and a
bind is committed only if the key's mod revision is still the one the check
was made against. A bind's check uses this index once the pods watch has
dispatched everything up to that revision, so every pod that ever arrived on
the node is counted; removals do not bump the sequence, and a cache that has
not seen one yet is only conservative.

The sequence revisions learnt here are hints (an arrival seen on the watch is
the sequence bump of the same transaction): a wrong hint only costs a failed
transaction, after which the binder reads the key and waits for the watch.
"""

from __future__ import annotations

from controller.capacity import NOTHING, Resources, counts, pod_requests
from controller.kinds import PODS
from controller.store import Store, decode
from controller.watch import HubEvent
from cowpod.v1 import pod_pb2

BINDSEQ_PREFIX = "registry/bindseq/"


def bindseq_key(node: str) -> str:
    return BINDSEQ_PREFIX + node


class NodeUsage:
    """The pods hub's observer. Synchronous except `resync`; owned by the hub's task."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pods: dict[str, tuple[str, Resources]] = {}  # pod key -> (node, requests)
        self._used: dict[str, Resources] = {}
        self._seq: dict[str, int] = {}

    # -- what the binder reads

    def used(self, node: str) -> Resources:
        return self._used.get(node, NOTHING)

    def seq(self, node: str) -> int:
        """Last known mod revision of the node's binding sequence key (0 = never bound)."""
        return self._seq.get(node, 0)

    def note_seq(self, node: str, revision: int) -> None:
        """The sequence key is at `revision` (our own bind committed, or read after a lost race)."""
        if revision > self._seq.get(node, 0):
            self._seq[node] = revision

    # -- fed by the hub

    async def resync(self) -> int:
        """Rebuild from a list of every pod; returns the list revision (where the watch resumes).
        Sequence keys are listed after the pods, so a hint may be ahead of the pods list:
        the binder then waits for the watch to bring the binding it stands for."""
        kvs, rev = await self.store.list_raw(PODS.prefix())
        seqs, _ = await self.store.list_raw(BINDSEQ_PREFIX)
        self._pods.clear()
        self._used.clear()
        self._seq.clear()
        for kv in kvs:
            self._put(kv.key, decode(pod_pb2.Pod, kv.value, kv.mod_revision))
        for s in seqs:
            self.note_seq(s.key[len(BINDSEQ_PREFIX):], s.mod_revision)
        return rev

    def observe(self, ev: HubEvent) -> None:
        key = ev.raw.key
        new = ev.new()
        if new is None:
            self._remove(key)
            return
        assert isinstance(new, pod_pb2.Pod)
        node = self._put(key, new)
        if node:
            # An arrival is the sequence bump of its own transaction.
            self.note_seq(node, ev.revision)

    def _put(self, key: str, pod: pod_pb2.Pod) -> str:
        """Record `pod`; returns the node it newly arrived on ('' if none)."""
        old = self._pods.get(key)
        if not counts(pod):
            if old is not None:
                self._remove(key)
            return ""
        node = pod.spec.node_name
        if old is not None:
            if old[0] == node:
                return ""  # a status or label change: requests are immutable
            self._remove(key)
        want = pod_requests(pod.spec)
        self._pods[key] = (node, want)
        self._used[node] = self._used.get(node, NOTHING) + want
        return node

    def _remove(self, key: str) -> None:
        old = self._pods.pop(key, None)
        if old is None:
            return
        node, want = old
        left = self._used.get(node, NOTHING) - want
        if left.pods <= 0:
            self._used.pop(node, None)
        else:
            self._used[node] = left


def seq_value(pod_key: str) -> bytes:
    """The sequence key's value: the last pod that arrived (for people reading etcd)."""
    return pod_key.encode()


__all__ = ["BINDSEQ_PREFIX", "NodeUsage", "bindseq_key", "seq_value"]
