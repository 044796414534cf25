"""Sharded zenstore: one ordinary store per shard, one owner (a Ray actor) per shard,
the ``Store`` API on top, and bulk ingest on Ray Data.

    from zenstore.cluster import ShardedStore
    with ShardedStore.create("docs.zens", dim=768, shards=4) as store:
        store.add(ids, vectors)
        hits = store.search(query, k=10)

Needs ``pip install 'zenstore[ray]'`` for the Ray backend; a read-only open with the
``local`` backend (the default for ``readonly=True``) needs no Ray. docs/scaling.md has
the design, what is atomic and how failures look.
"""

from .errors import PartialWrite, ShardError, ShardUnavailable
from .manifest import CLUSTER_FORMAT_VERSION, ClusterManifest
from .results import BatchResult, Hits
from .sharded import ShardedStore

__all__ = ["ShardedStore", "ShardError", "ShardUnavailable", "PartialWrite", "ClusterManifest",
           "CLUSTER_FORMAT_VERSION", "Hits", "BatchResult"]
