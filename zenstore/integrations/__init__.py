"""Framework integrations: zenstore as a vector store and a reranker.

- ``zenstore.integrations.langchain``: ``ZenstoreVectorStore`` (a LangChain ``VectorStore``)
  and ``ZenstoreReranker`` (a ``BaseDocumentCompressor``); extra ``zenstore[langchain]``.
- ``zenstore.integrations.llama_index``: ``ZenstoreVectorStore`` (a LlamaIndex
  ``BasePydanticVectorStore``) and ``ZenstoreRerank`` (a ``BaseNodePostprocessor``);
  extra ``zenstore[llama-index]``.

Importing this package imports neither framework; each submodule imports its own.
"""
