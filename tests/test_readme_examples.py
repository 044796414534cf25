"""README's "Use it as a reranker" examples run, in order, in one namespace (the LangChain
and LlamaIndex ones reuse the first one's toy model and store), and print what they say."""

from __future__ import annotations

import pytest

from .test_docs import README, fenced, section


def _blocks():
    return fenced(section(README, "Use it as a reranker"), "python")


def test_there_are_three_examples():
    blocks = _blocks()
    assert len(blocks) == 3
    assert "zenstore.Reranker" in blocks[0]
    assert "zenstore.integrations.langchain" in blocks[1] and "zenstore.integrations.llama_index" in blocks[2]


def test_reranker_examples_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    plain, langchain, llama = _blocks()
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "readme_rerank_example"}
    exec(compile(plain, "README.md (plain Python)", "exec"), scope)
    assert capsys.readouterr().out.strip() == \
        "['scurvy is caused by a lack of vitamin c', 'citrus fruit is rich in vitamin c']"
    assert [r.id for r in scope["results"]] == ["d1", "d4"]
    exec(compile(langchain, "README.md (LangChain)", "exec"), scope)
    assert capsys.readouterr().out.splitlines() == [
        "d1 scurvy is caused by a lack of vitamin c", "d4 citrus fruit is rich in vitamin c"]
    exec(compile(llama, "README.md (LlamaIndex)", "exec"), scope)
    assert capsys.readouterr().out.strip() == "['d1', 'd4']"
    assert (tmp_path / "wide.zen").is_dir()
