"""zenstore.Reranker: candidates of every shape, exact dequantized scores, missing ids."""

from __future__ import annotations

import zlib
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

import zenstore
from zenstore import Reranker, RerankResult, Store
from zenstore.embedders import CallableEmbedder
from zenstore.rerank import candidate_id, candidate_text, float_scores

DIM = 96
N = 120


def _embed(texts):
    """Each text is "doc-<i>" or free text: doc-i maps to the stored vector i."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((N, DIM)).astype(np.float32)
    out = []
    for t in texts:
        if t.startswith("doc-"):
            out.append(base[int(t[4:])])
        else:
            out.append(np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM).astype(np.float32))
    return np.stack(out)


@pytest.fixture(params=["cosine", "l2"])
def store(tmp_path, request):
    vectors = _embed([f"doc-{i}" for i in range(N)])
    with Store.create(tmp_path / "s", dim=DIM, metric=request.param, n_base=4) as s:
        s.add(range(N), vectors, payloads=[{"text": f"doc-{i}", "n": i} for i in range(N)])
        yield s


class Doc:  # the attributes of a LangChain Document
    def __init__(self, page_content, id=None, metadata=None):
        self.page_content, self.id, self.metadata = page_content, id, metadata or {}


class Node:  # a LlamaIndex TextNode / NodeWithScore
    def __init__(self, node_id, text, metadata=None):
        self.node_id, self.text, self.metadata = node_id, text, metadata or {}

    def get_content(self):
        return self.text


class WithScore:
    def __init__(self, node, score=None):
        self.node, self.score = node, score


def test_scores_are_the_stores_rerank(store):
    q = _embed(["doc-7"])[0] + 0.1
    cands = [3, 7, 50, 99, 7, 12]
    got = Reranker(store).rerank(q, cands, top_n=4)
    hits = store.rerank(q, [3, 7, 50, 99, 12], top_n=4)
    assert [(r.id, r.score) for r in got] == [(h.id, h.score) for h in hits]
    assert got[0].id == 7 and got[0].index == 1  # a repeated candidate keeps its first position
    assert [r.index for r in got] == [cands.index(r.id) for r in got]
    assert got[0].text == "doc-7" and got[0].payload == {"text": "doc-7", "n": 7}
    assert not any(r.embedded for r in got)
    with pytest.raises(FrozenInstanceError):
        got[0].score = 1.0
    assert isinstance(got[0], RerankResult)


def test_candidate_shapes(store):
    q = _embed(["doc-5"])[0]
    shapes = [
        [{"id": 5}, {"id": 9, "text": "own text"}],
        [Doc("five", id=5), Doc("nine", metadata={"key": 9})],
        [WithScore(Node(5, "five")), Node(9, "nine")],
        [np.int64(5), np.int32(9)],
    ]
    ref = Reranker(store, id_key="key").rerank(q, [5, 9], top_n=2)
    for cands in shapes:
        got = Reranker(store, id_key="key").rerank(q, cands, top_n=2)
        assert [(r.id, r.score, r.index) for r in got] == [(h.id, h.score, h.index) for h in ref]
        assert type(got[0].id) is int
    got = Reranker(store).rerank(q, [Doc("five", id=5)], top_n=2)
    assert got[0].text == "five"  # the candidate's own text, else the payload's
    assert candidate_text({"body": "x"}, "body") == "x" and candidate_text(3) is None
    with pytest.raises(zenstore.InvalidArgument, match="cannot find an id.*float"):
        candidate_id(1.5)


def test_text_query_needs_an_embedder(store):
    emb = CallableEmbedder(_embed, dim=DIM)
    got = Reranker(store, emb).rerank("doc-33", [1, 33, 60], top_n=1)
    assert got[0].id == 33
    with pytest.raises(zenstore.InvalidArgument, match="needs an embedder"):
        Reranker(store).rerank("doc-33", [1, 33])


def test_missing_candidates(store):
    emb = CallableEmbedder(_embed, dim=DIM)
    q = _embed(["doc-4"])[0]
    cands = [4, {"id": 10_000, "text": "doc-4"}, Doc("doc-8"), 8]
    with pytest.raises(zenstore.IdNotFound, match=r"10000 \(candidate 1\).*None \(candidate 2\)"):
        Reranker(store, emb).rerank(q, cands)
    skipped = Reranker(store, emb).rerank(q, cands, top_n=10, missing="skip")
    assert [r.id for r in skipped] == [h.id for h in store.rerank(q, [4, 8])]
    mixed = Reranker(store, emb).rerank(q, cands, top_n=10, missing="embed")
    assert len(mixed) == 4
    emb_results = {r.index: r for r in mixed if r.embedded}
    assert set(emb_results) == {1, 2}
    # embedded candidates are scored from the embedder's float vectors, exactly
    exact = float_scores(q, _embed(["doc-4", "doc-8"]), store.metric)
    assert [emb_results[1].score, emb_results[2].score] == pytest.approx(exact.tolist(), rel=1e-5)
    scores = [r.score for r in mixed]
    assert scores == sorted(scores, reverse=store.metric != "l2")
    with pytest.raises(zenstore.InvalidArgument, match="needs an embedder"):
        Reranker(store).rerank(q, cands, missing="embed")
    with pytest.raises(zenstore.InvalidArgument, match="carry no text"):
        Reranker(store, emb).rerank(q, [4, 10_001], missing="embed")
    # ids of the other kind are simply not stored
    assert Reranker(store).rerank(q, ["4", 4], missing="skip")[0].id == 4


def test_arguments(store):
    q = _embed(["doc-1"])[0]
    assert Reranker(store).rerank(q, []) == []
    with pytest.raises(zenstore.InvalidArgument, match="missing must be"):
        Reranker(store).rerank(q, [1], missing="drop")
    with pytest.raises(zenstore.InvalidArgument, match="top_n"):
        Reranker(store).rerank(q, [1], top_n=0)
    with pytest.raises(zenstore.DimensionMismatch):
        Reranker(store).rerank(np.ones(DIM + 1), [1])
    wrong = CallableEmbedder(lambda texts: np.ones((len(texts), 5)), dim=5)
    with pytest.raises(zenstore.InvalidArgument, match="same model"):
        Reranker(store, wrong).rerank(q, [{"id": -5, "text": "t"}], missing="embed")
