"""The rerank pipeline in LlamaIndex: VectorStoreIndex on ZenstoreVectorStore -> retriever
-> query engine with ZenstoreRerank (MockLLM), plus filters, deletion and the store API."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import zenstore  # noqa: E402
from zenstore.integrations.llama_index import ZenstoreRerank, ZenstoreVectorStore, to_filter  # noqa: E402

from ._fixtures import DIM, corpus, embed  # noqa: E402


class WordEmbedding(BaseEmbedding):
    """The fixtures' bag-of-words vectors as a LlamaIndex embedding model (counts calls)."""

    calls: int = 0

    def _get_query_embedding(self, query: str):
        self.calls += 1
        return embed([query])[0].tolist()

    async def _aget_query_embedding(self, query: str):
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str):
        return embed([text])[0].tolist()

    def _get_text_embeddings(self, texts):
        return embed(texts).tolist()


@pytest.fixture()
def built():
    rows = corpus()
    docs = [Document(text=t, id_=i, metadata={"topic": topic, "n": n}) for n, (i, topic, t) in enumerate(rows)]
    vs = ZenstoreVectorStore(n_base=4, seed=3)
    model = WordEmbedding()
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=vs),
                                            embed_model=model)
    yield vs, index, model, docs
    vs.close()


def test_query_engine_with_zenstore_rerank(built):
    vs, index, model, docs = built
    assert len(vs.store) == len(docs) and vs.store.dim == DIM
    rerank = ZenstoreRerank(vs, top_n=2)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=12, node_postprocessors=[rerank])
    query = "honey bees pollinate flowers"
    calls = model.calls
    response = engine.query(query)
    assert model.calls == calls + 1  # the postprocessor used the retriever's query embedding
    assert len(response.source_nodes) == 2
    assert all(n.node.metadata["topic"] == "bees" for n in response.source_nodes)
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)
    retrieved = index.as_retriever(similarity_top_k=12).retrieve(query)
    hits = vs.store.rerank(embed([query])[0], [n.node.node_id for n in retrieved], top_n=2)
    assert [n.node.node_id for n in response.source_nodes] == [h.id for h in hits]
    assert scores == pytest.approx([h.score for h in hits], rel=1e-6)
    assert str(response)  # MockLLM answered from the reranked context


def test_rerank_embeds_the_query_when_the_bundle_has_no_vector(built):
    vs, index, model, _ = built
    nodes = index.as_retriever(similarity_top_k=10).retrieve("ocean tides moon")
    with_vec = ZenstoreRerank(vs, top_n=3).postprocess_nodes(
        nodes, QueryBundle("ocean tides moon", embedding=embed(["ocean tides moon"])[0].tolist()))
    by_text = ZenstoreRerank(vs.store, embedder=model, top_n=3).postprocess_nodes(nodes, query_str="ocean tides moon")
    assert [n.node.node_id for n in with_vec] == [n.node.node_id for n in by_text]
    assert [n.score for n in with_vec] == pytest.approx([n.score for n in by_text], rel=1e-5)
    # an embedder given embeds the query: the bundle may hold a first stage's other vector
    small = QueryBundle("ocean tides moon", embedding=[1.0] * 16)
    with_small = ZenstoreRerank(vs, embedder=model, top_n=3).postprocess_nodes(nodes, small)
    assert [n.node.node_id for n in with_small] == [n.node.node_id for n in by_text]
    with pytest.raises(zenstore.DimensionMismatch):
        ZenstoreRerank(vs, embedder=model, reuse_query_embedding=True).postprocess_nodes(nodes, small)
    with pytest.raises(zenstore.InvalidArgument, match="no query embedding"):
        ZenstoreRerank(vs, top_n=3).postprocess_nodes(nodes, query_str="ocean tides moon")
    stranger = NodeWithScore(node=TextNode(id_="not-stored", text="ocean tides"), score=0.0)
    with pytest.raises(zenstore.IdNotFound, match="not-stored"):
        ZenstoreRerank(vs, embedder=model).postprocess_nodes(nodes + [stranger], query_str="tides")
    kept = ZenstoreRerank(vs, embedder=model, top_n=50, missing="skip").postprocess_nodes(
        nodes + [stranger], query_str="tides")
    assert len(kept) == len(nodes)
    assert ZenstoreRerank(vs, embedder=model).postprocess_nodes([], query_str="tides") == []


def test_filters(built):
    vs, index, _, _ = built
    only = MetadataFilters(filters=[MetadataFilter(key="topic", value="rockets")])
    got = index.as_retriever(similarity_top_k=5, filters=only).retrieve("honey bees")
    assert len(got) == 5 and all(n.node.metadata["topic"] == "rockets" for n in got)
    either = MetadataFilters(filters=[MetadataFilter(key="n", value=2, operator=FilterOperator.LTE),
                                      MetadataFilter(key="topic", value=["tides"], operator=FilterOperator.IN)],
                             condition=FilterCondition.OR)
    got = index.as_retriever(similarity_top_k=100, filters=either).retrieve("x")
    assert {n.node.metadata["topic"] for n in got} == {"scurvy", "tides"} and len(got) == 3 + 8
    none = MetadataFilters(filters=[MetadataFilter(key="topic", value="bees")], condition=FilterCondition.NOT)
    assert to_filter(none) == {"$not": {"$or": [{"topic": {"$eq": "bees"}}]}}
    got = vs.get_nodes(filters=none)
    assert len(got) == 32 and all(n.metadata["topic"] != "bees" for n in got)
    nested = MetadataFilters(filters=[
        MetadataFilter(key="n", value=20, operator=FilterOperator.GTE),
        MetadataFilters(filters=[MetadataFilter(key="topic", value="bees"),
                                 MetadataFilter(key="topic", value="compilers")], condition=FilterCondition.OR)])
    assert sorted(n.metadata["n"] for n in vs.get_nodes(filters=nested)) == list(range(20, 24)) + list(range(32, 40))
    empty = MetadataFilters(filters=[MetadataFilter(key="missing", value=None, operator=FilterOperator.IS_EMPTY)])
    assert len(vs.get_nodes(filters=empty)) == 40
    # the store answers them: with a payload index the same nodes come back
    vs.store.create_payload_index("topic", "keyword")
    assert sorted(n.metadata["n"] for n in vs.get_nodes(filters=nested)) == list(range(20, 24)) + list(range(32, 40))
    got = index.as_retriever(similarity_top_k=5, filters=only).retrieve("honey bees")
    assert len(got) == 5 and all(n.node.metadata["topic"] == "rockets" for n in got)
    vs.store.drop_payload_index("topic")
    text = MetadataFilters(filters=[MetadataFilter(key="topic", value="be", operator=FilterOperator.TEXT_MATCH)])
    with pytest.raises(zenstore.InvalidArgument, match="no text matching"):
        vs.get_nodes(filters=text)


def test_list_operators_match_array_metadata(tmp_path):
    vs = ZenstoreVectorStore(tmp_path / "lists.zen", n_base=2)
    tags = [["a", "b"], ["b"], ["c"], [], "a"]
    nodes = [TextNode(id_=f"n{i}", text=f"t{i}", metadata={"tags": t}, embedding=embed([f"t{i}"])[0].tolist())
             for i, t in enumerate(tags)]
    vs.add(nodes)

    def ids(op, value):
        return sorted(n.node_id for n in vs.get_nodes(filters=MetadataFilters(
            filters=[MetadataFilter(key="tags", value=value, operator=op)])))

    assert ids(FilterOperator.CONTAINS, "b") == ["n0", "n1"]
    assert ids(FilterOperator.ANY, ["a", "c"]) == ["n0", "n2", "n4"]  # a scalar counts as itself
    assert ids(FilterOperator.ALL, ["a", "b"]) == ["n0"]
    assert ids(FilterOperator.NIN, ["a"]) == ["n1", "n2", "n3"]
    vs.close()


def test_delete_by_ref_doc_and_nodes(built):
    vs, index, _, docs = built
    index.delete_ref_doc("bees-0")
    assert len(vs.store) == 39 and "bees-0" not in {n.ref_doc_id for n in vs.get_nodes()}
    some = [n.node_id for n in vs.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="tides")]))]
    vs.delete_nodes(node_ids=some[:3])
    assert len(vs.store) == 36
    vs.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="tides")]))
    assert len(vs.store) == 31
    got = index.as_retriever(similarity_top_k=40).retrieve("ocean tides moon")
    assert all(n.node.metadata["topic"] != "tides" for n in got) and len(got) == 31
    vs.delete_nodes()  # no argument: nothing
    assert len(vs.store) == 31
    vs.clear()
    assert len(vs.store) == 0
    assert index.as_retriever(similarity_top_k=3).retrieve("bees") == []


def test_store_api(built, tmp_path):
    vs, _, _, _ = built
    nodes = vs.get_nodes()
    assert len(nodes) == 40 and all(n.get_content() and n.embedding is None for n in nodes)
    one = vs.get_nodes(node_ids=[nodes[3].node_id, "absent"])
    assert [n.node_id for n in one] == [nodes[3].node_id]
    assert one[0].get_content() == nodes[3].get_content() and one[0].ref_doc_id == nodes[3].ref_doc_id
    q = embed(["compiler machine code"])[0].tolist()
    res = vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4))
    assert len(res.nodes) == 4 and res.similarities == sorted(res.similarities, reverse=True)
    assert res.ids == [n.node_id for n in res.nodes]
    restricted = vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4, node_ids=res.ids[2:]))
    assert restricted.ids == res.ids[2:]
    by_doc = vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=4, doc_ids=["bees-1", "bees-2"]))
    assert sorted(n.ref_doc_id for n in by_doc.nodes) == ["bees-1", "bees-2"]
    mmr = vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3, mode=VectorStoreQueryMode.MMR,
                                    mmr_threshold=0.2))
    assert len(mmr.nodes) == 3 and mmr.ids[0] == res.ids[0]
    with pytest.raises(zenstore.InvalidArgument, match="mode"):
        vs.query(VectorStoreQuery(query_embedding=q, mode=VectorStoreQueryMode.SVM))
    with pytest.raises(zenstore.InvalidArgument, match="embedding"):
        vs.add([TextNode(text="no vector")])
    # a store at a path is kept and reopens with its nodes
    path = str(tmp_path / "li.zen")
    kept = ZenstoreVectorStore(path=path, metric="ip")
    kept.add([TextNode(id_="a", text="alpha", embedding=np.ones(DIM).tolist(), metadata={"k": 1})])
    kept.close()
    again = ZenstoreVectorStore(path=path)
    assert again.client.metric == "ip" and [n.get_content() for n in again.get_nodes()] == ["alpha"]
    again.close()
    temp = vs._temp_dir
    vs.close()
    assert not os.path.exists(temp)


async def test_async(built):
    vs, index, _, _ = built
    q = embed(["rocket thrust"])[0].tolist()
    res = await vs.aquery(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    assert res.ids == vs.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3)).ids
    await vs.adelete("rockets-1")
    assert "rockets-1" not in {n.ref_doc_id for n in await vs.aget_nodes()}
    # LlamaIndex's async retriever does not leave the query embedding in the bundle:
    # without an embedder the postprocessor says so, with one it embeds the query itself
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=8, node_postprocessors=[ZenstoreRerank(vs, top_n=2)])
    with pytest.raises(zenstore.InvalidArgument, match="async"):
        await engine.aquery("rocket engine thrust")
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=8,
                                   node_postprocessors=[ZenstoreRerank(vs, embedder=WordEmbedding(), top_n=2)])
    response = await engine.aquery("rocket engine thrust")
    assert len(response.source_nodes) == 2
    assert all(n.node.metadata["topic"] == "rockets" for n in response.source_nodes)
    await vs.aclear()
    assert len(vs.store) == 0
