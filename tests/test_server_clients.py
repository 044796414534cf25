"""``zenstore serve`` called by the clients people already have, unchanged: the official
``cohere`` SDK (``ClientV2`` -> /v2/rerank, ``Client`` -> /v1/rerank), LangChain's and
LlamaIndex's ``CohereRerank(base_url=...)``, and zenstore's own OpenAI-compatible embedder
against /v1/embeddings. One real server process (the session's ``api_server``,
tests/conftest.py)."""

from __future__ import annotations

import gc
import warnings

import httpx
import numpy as np
import pytest

cohere = pytest.importorskip("cohere")

from tests._server import doc_text  # noqa: E402
from tests._server_embedder import embed  # noqa: E402


@pytest.fixture(scope="module")
def server(api_server):
    api_server.read_key = api_server.keys["read"]
    return api_server


@pytest.fixture
def http():
    with httpx.Client(timeout=60) as client:  # closed here: the SDK does not close its own
        yield client


def candidates():
    """A first stage's texts: stored documents, one stored id, one text the store lacks."""
    return [doc_text(5), doc_text(12), "7", doc_text(40), "a text no document has about astronomy"]


def test_cohere_client_v2_reranks_stored_texts(server, http):
    co = cohere.ClientV2(api_key=server.read_key, base_url=server.url, httpx_client=http)
    resp = co.rerank(model="zenstore", query="document about biology and item43", documents=candidates(), top_n=3)
    assert len(resp.results) == 3
    assert resp.results[0].index == 3 or resp.results[0].index == 1  # biology documents first
    assert all(0.0 <= r.relevance_score <= 1.0 for r in resp.results)
    assert [r.relevance_score for r in resp.results] == sorted((r.relevance_score for r in resp.results), reverse=True)
    assert resp.id and resp.meta.api_version.version == "2"
    extra = resp.results[0].model_extra
    assert extra["resolved_by"] == "text" and extra["stored_id"] in (12, 40)


def test_cohere_client_v2_scores_match_the_store(server, http):
    co = cohere.ClientV2(api_key=server.read_key, base_url=server.url, httpx_client=http)
    docs = candidates()
    resp = co.rerank(model="zenstore", query=doc_text(12), documents=docs)
    assert sorted(r.index for r in resp.results) == list(range(len(docs)))  # top_n defaults to all
    by_index = {r.index: r for r in resp.results}
    assert resp.results[0].index == 1  # the exact text of the query
    how = {i: by_index[i].model_extra["resolved_by"] for i in by_index}
    assert how == {0: "text", 1: "text", 2: "id", 3: "text", 4: "embedded"}
    q = embed([doc_text(12)])[0]
    exact = float(embed([docs[4]])[0] @ q / np.linalg.norm(q))  # embedded on the fly: float score
    assert by_index[4].model_extra["score"] == pytest.approx(exact, abs=1e-5)
    assert by_index[4].relevance_score == pytest.approx((1 + exact) / 2, abs=1e-5)


def test_cohere_client_v1_rerank_returns_documents(server, http):
    co = cohere.Client(api_key=server.read_key, base_url=server.url, httpx_client=http)
    docs = candidates()
    resp = co.rerank(query=doc_text(40), documents=docs, top_n=2, return_documents=True)
    assert [r.index for r in resp.results][0] == 3
    assert resp.results[0].document.text == docs[3]
    assert len(resp.results) == 2 and resp.meta.api_version.version == "1"
    resp = co.rerank(query=doc_text(40), documents=[{"text": d} for d in docs], top_n=1)  # object documents
    assert resp.results[0].index == 3 and resp.results[0].document is None


def test_cohere_client_gets_its_own_errors(server, http):
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="zsk_nope_nope", base_url=server.url, httpx_client=http).rerank(
            model="m", query="q", documents=["a"])
    co = cohere.ClientV2(api_key=server.read_key, base_url=server.url, httpx_client=http)
    with pytest.raises(cohere.errors.UnprocessableEntityError) as err:
        co.rerank(model="m", query="q", documents=["a"], top_n=5000)
    assert "top_n=5000" in err.value.body["message"]


def test_langchain_cohere_rerank_against_the_server(server):
    lc = pytest.importorskip("langchain_cohere")
    from langchain_core.documents import Document

    reranker = lc.CohereRerank(base_url=server.url, cohere_api_key=server.read_key, model="zenstore", top_n=2)
    docs = [Document(page_content=t, metadata={"source": i}) for i, t in enumerate(candidates())]
    out = reranker.compress_documents(docs, query=doc_text(5))
    assert [d.metadata["source"] for d in out][0] == 0
    assert len(out) == 2 and all(0 <= d.metadata["relevance_score"] <= 1 for d in out)
    del reranker  # it made its own SDK client (base_url=...), which never closes its sockets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_llama_index_cohere_rerank_against_the_server(server):
    li = pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    reranker = li.CohereRerank(base_url=server.url, api_key=server.read_key, model="zenstore", top_n=2,
                               max_retries=1)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.0) for i, t in enumerate(candidates())]
    out = reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(doc_text(40)))
    assert [n.node.node_id for n in out][0] == "n3"  # the exact text of the query
    assert len(out) == 2 and all(0 <= n.score <= 1 for n in out)
    del reranker  # its own SDK client (base_url=...) never closes its sockets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_openai_embedder_against_the_embeddings_endpoint(server, monkeypatch):
    from zenstore.embedders import API_KEY_ENV, load_embedder

    monkeypatch.setenv(API_KEY_ENV, server.read_key)
    texts = ["one text", "another text", doc_text(3)]
    for fmt in ("base64", "float"):
        with load_embedder(f"openai:{server.url}#hash", encoding_format=fmt) as emb:
            np.testing.assert_allclose(emb.embed_documents(texts), embed(texts), rtol=1e-6)
            assert emb.dim == 64
