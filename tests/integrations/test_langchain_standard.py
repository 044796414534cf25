"""LangChain's own standard vector-store suite, run unchanged against ZenstoreVectorStore.

``VectorStoreIntegrationTests`` (langchain-tests) checks adds with and without ids,
upserts, deletes, get_by_ids and exact result order, sync and async, with 6-d
``DeterministicFakeEmbedding`` vectors (zenstore pads them to 64 internally). Nothing is
overridden or skipped: its own ``test_no_overrides_DO_NOT_OVERRIDE`` checks that.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests  # noqa: E402

from zenstore.integrations.langchain import ZenstoreVectorStore  # noqa: E402


class TestZenstoreVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self):
        store = ZenstoreVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            temp = store._temp_dir
            store.close()
            assert not os.path.exists(temp), "a temporary store is removed on close"
