"""ZenstoreVectorStore beyond the standard suite, and the rerank pipeline in LangChain:
BM25 first stage -> ContextualCompressionRetriever(ZenstoreReranker)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402

import zenstore  # noqa: E402
from zenstore.integrations.langchain import ZenstoreReranker, ZenstoreVectorStore  # noqa: E402

from ._fixtures import BM25, DIM, corpus, embed  # noqa: E402


class WordEmbeddings(Embeddings):
    def embed_documents(self, texts):
        return embed(texts).tolist()

    def embed_query(self, text):
        return embed([text])[0].tolist()


class BM25Retriever(BaseRetriever):
    """A first stage over Documents (the repository's small BM25)."""

    docs: list
    k: int = 10
    index: object = None

    def model_post_init(self, _ctx) -> None:
        self.index = BM25([d.page_content for d in self.docs])

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun):
        return [self.docs[i] for i in self.index.top(query, self.k)]


@pytest.fixture(scope="module")
def rows():
    return corpus()


@pytest.fixture()
def docs(rows):
    return [Document(id=i, page_content=t, metadata={"topic": topic, "n": n})
            for n, (i, topic, t) in enumerate(rows)]


@pytest.fixture()
def vs(docs):
    store = ZenstoreVectorStore(WordEmbeddings(), n_base=4, seed=1)
    store.add_documents(docs)
    yield store
    store.close()


def _float_top(query, docs, n):
    q = embed([query])[0]
    x = embed([d.page_content for d in docs])
    order = np.argsort(-(x @ q), kind="stable")[:n]
    return [docs[i].id for i in order]


def test_bm25_then_zenstore_reranker_pipeline(vs, docs):
    query = "what vitamin deficiency causes bleeding gums"
    first = BM25Retriever(docs=docs, k=12)
    candidates = first.invoke(query)
    assert 3 < len(candidates) <= 12
    pipeline = ContextualCompressionRetriever(
        base_compressor=ZenstoreReranker(vs, WordEmbeddings(), top_n=3), base_retriever=first)
    got = pipeline.invoke(query)
    assert len(got) == 3
    assert all(d.metadata["topic"] == "scurvy" for d in got)
    scores = [d.metadata["relevance_score"] for d in got]
    assert scores == sorted(scores, reverse=True)
    # the scores are the store's exact dequantized scores of those candidates
    hits = vs.store.rerank(embed([query])[0], [d.id for d in candidates], top_n=3)
    assert [d.id for d in got] == [h.id for h in hits]
    assert scores == pytest.approx([h.score for h in hits], rel=1e-6)
    # and they rank like exact float scores, within the codec's error
    assert {d.id for d in got} == set(_float_top(query, candidates, 3))
    fl = embed([d.page_content for d in got]) @ embed([query])[0]
    assert np.abs(np.array(scores) - fl).max() < 0.15
    # the candidates themselves are untouched (copies carry the score)
    assert all("relevance_score" not in d.metadata for d in candidates)


async def test_pipeline_async(vs, docs):
    query = "rocket engine thrust"
    first = BM25Retriever(docs=docs, k=10)
    pipeline = ContextualCompressionRetriever(
        base_compressor=ZenstoreReranker(vs.store, WordEmbeddings(), top_n=2), base_retriever=first)
    got = await pipeline.ainvoke(query)
    sync = pipeline.invoke(query)
    assert [d.id for d in got] == [d.id for d in sync]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync], rel=1e-6)
    assert all(d.metadata["topic"] == "rockets" for d in got)


def test_reranker_id_key_and_missing(vs, docs):
    by_meta = [Document(page_content=d.page_content, metadata={"doc": d.id}) for d in docs[:10]]
    rr = ZenstoreReranker(vs, WordEmbeddings(), top_n=4, id_key="doc")
    got = rr.compress_documents(by_meta, "honey bees")
    assert [d.metadata["doc"] for d in got] == \
        [d.id for d in ZenstoreReranker(vs, WordEmbeddings(), top_n=4).compress_documents(docs[:10], "honey bees")]
    stranger = Document(id="nope", page_content="bees honey hive")
    with pytest.raises(zenstore.IdNotFound, match="nope"):
        ZenstoreReranker(vs, WordEmbeddings()).compress_documents([docs[0], stranger], "bees")
    skip = ZenstoreReranker(vs, WordEmbeddings(), top_n=5, missing="skip")
    assert [d.id for d in skip.compress_documents([docs[0], stranger], "bees")] == [docs[0].id]
    emb = ZenstoreReranker(vs, WordEmbeddings(), top_n=5, missing="embed")
    out = emb.compress_documents([docs[0], stranger], "bees honey hive")
    assert out[0].id == "nope" and out[0].metadata["relevance_score"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(zenstore.InvalidArgument, match="missing"):
        ZenstoreReranker(vs, WordEmbeddings(), missing="ignore")
    assert ZenstoreReranker(vs, WordEmbeddings()).compress_documents([], "q") == []


def test_filters(vs):
    got = vs.similarity_search("honey bees", k=5, filter={"topic": "tides"})
    assert got and all(d.metadata["topic"] == "tides" for d in got)
    got = vs.similarity_search("honey bees", k=50, filter={"n": {"$lt": 3}})
    assert sorted(d.metadata["n"] for d in got) == [0, 1, 2]
    got = vs.similarity_search("x", k=50, filter={"$or": [{"topic": "bees"}, {"n": {"$in": [0, 1]}}]})
    assert {d.metadata["topic"] for d in got} == {"bees", "scurvy"}
    got = vs.similarity_search("x", k=50, filter=lambda m: m["n"] % 10 == 0)
    assert sorted(d.metadata["n"] for d in got) == [0, 10, 20, 30]
    assert vs.similarity_search("x", k=5, filter={"topic": "nothing"}) == []
    with pytest.raises(zenstore.InvalidFilter, match=r"\$near"):
        vs.similarity_search("x", k=5, filter={"n": {"$near": 3}})
    with pytest.raises(zenstore.InvalidFilter, match=r"\$and"):
        vs.similarity_search("x", k=5, filter={"$and": {"n": 1}})
    # the filter goes to the store: its payload indexes answer it, with the same documents
    plain = vs.similarity_search("honey bees", k=50, filter={"n": {"$gte": 5, "$lt": 9}})
    vs.store.create_payload_index("n", "int")
    indexed = vs.similarity_search("honey bees", k=50, filter={"n": {"$gte": 5, "$lt": 9}})
    assert [d.id for d in indexed] == [d.id for d in plain] and len(plain) == 4


def test_scores_relevance_and_mmr(vs, docs):
    with_score = vs.similarity_search_with_score("tides moon gravity", k=5)
    assert [s for _, s in with_score] == sorted((s for _, s in with_score), reverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rel = vs.similarity_search_with_relevance_scores("tides moon gravity", k=5)
    assert all(0 <= s <= 1 for _, s in rel)
    assert [d.id for d, _ in rel] == [d.id for d, _ in with_score]
    vec = WordEmbeddings().embed_query("tides moon gravity")
    assert [d.id for d in vs.similarity_search_by_vector(vec, k=5)] == [d.id for d, _ in with_score]
    mmr = vs.max_marginal_relevance_search("tides moon gravity", k=4, fetch_k=20, lambda_mult=0.1)
    plain = vs.similarity_search("tides moon gravity", k=4)
    assert len(mmr) == 4 and mmr[0].id == plain[0].id
    retriever = vs.as_retriever(search_type="mmr", search_kwargs={"k": 3})
    assert len(retriever.invoke("compiler syntax tree")) == 3
    thresh = vs.as_retriever(search_type="similarity_score_threshold",
                             search_kwargs={"k": 40, "score_threshold": 0.7})
    got = thresh.invoke("compiler syntax tree machine code")
    assert got and all(d.metadata["topic"] == "compilers" for d in got)


async def test_async_variants(vs):
    a = await vs.asimilarity_search("ocean tides", k=3)
    assert [d.id for d in a] == [d.id for d in vs.similarity_search("ocean tides", k=3)]
    m = await vs.amax_marginal_relevance_search("ocean tides", k=2)
    assert len(m) == 2
    ids = await vs.aadd_texts(["brand new text about moon tides"], [{"topic": "tides", "n": -1}])
    assert (await vs.aget_by_ids(ids))[0].page_content == "brand new text about moon tides"
    await vs.adelete(ids)
    assert await vs.aget_by_ids(ids) == []
    other = await ZenstoreVectorStore.afrom_texts(["a b", "c d"], WordEmbeddings(), ids=["x", "y"])
    assert [d.id for d in other.get_by_ids(["y", "x"])] == ["y", "x"]
    other.close()


def test_persistent_path_reopens(tmp_path, docs):
    path = tmp_path / "lc.zen"
    first = ZenstoreVectorStore.from_documents(docs, WordEmbeddings(), path=str(path), metric="ip")
    before = [d.id for d in first.similarity_search("bees", k=3)]
    first.close()
    assert path.is_dir()  # a store at a path given by the caller is kept
    again = ZenstoreVectorStore(WordEmbeddings(), path=str(path))
    assert again.store.metric == "ip" and again.store.dim == DIM
    assert [d.id for d in again.similarity_search("bees", k=3)] == before
    assert again.delete() is True  # delete(None): everything
    assert again.similarity_search("bees", k=3) == []
    again.close()


def test_bad_inputs(tmp_path):
    vs = ZenstoreVectorStore(WordEmbeddings(), metric="l2")
    assert vs.similarity_search("nothing yet") == [] and vs.get_by_ids(["a"]) == []
    assert vs.delete(["a"]) is True
    with pytest.raises(zenstore.InvalidArgument, match="holds the text"):
        vs.add_texts(["t"], [{"text": "clash"}])
    with pytest.raises(zenstore.InvalidArgument, match="ids are str"):
        vs.add_texts(["t"], ids=[3])
    with pytest.raises(zenstore.InvalidArgument, match="1 texts but 2 metadatas"):
        vs.add_texts(["t"], [{}, {}])
    with pytest.raises(zenstore.InvalidArgument, match="embed_documents"):
        ZenstoreVectorStore(object())
    vs.add_texts(["tides moon", "bees honey"], ids=["a", "b"])
    (doc, dist), = vs.similarity_search_with_score("tides moon", k=1)
    assert doc.id == "a" and 0 <= dist < 0.2  # l2: squared distance, small for a near-duplicate
    rel = vs.similarity_search_with_relevance_scores("tides moon", k=2)
    assert rel[0][1] > rel[1][1] and all(0 <= s <= 1 for _, s in rel)
    temp = vs._temp_dir
    vs.close()
    vs.close()
    assert not os.path.exists(temp)
