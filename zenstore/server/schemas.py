"""Request and response bodies, as pydantic models: they validate requests (strict JSON
types, unknown fields refused) and are the OpenAPI schema served at ``/openapi.json``.

The rerank bodies are Cohere's (``cohere`` 5.x ``rerank`` / ``v2.rerank``); fields Cohere
defines that an embedding reranker has no use for (``model``, ``rank_fields``,
``max_chunks_per_doc``, ``max_tokens_per_doc``, ``priority``) are accepted and ignored.
Vectors are declared but checked with numpy (``vectors.py``), not field by field.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SkipValidation
from typing_extensions import Annotated

Id = Union[int, str]
VectorIn = Annotated[Union[list[float], str], SkipValidation,
                     Field(description="a JSON list of numbers, or base64 of little-endian float32 bytes")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RerankDocument(BaseModel):
    """Cohere's document object: ``text`` is what is resolved; other string fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    text: str


class RerankV1Request(_Strict):
    query: str = Field(description="embedded with the server's embedder")
    documents: list[Union[str, RerankDocument]] = Field(
        description="each: a stored id, else the exact payload text of a stored document, else "
                    "embedded on the fly (when the server has an embedder)")
    top_n: int | None = Field(None, description="results to return (default: all documents)")
    return_documents: bool | None = False
    model: str | None = Field(None, description="accepted and ignored")
    rank_fields: list[str] | None = Field(None, description="accepted and ignored")
    max_chunks_per_doc: int | None = Field(None, description="accepted and ignored")


class RerankV2Request(_Strict):
    query: str
    documents: list[Union[str, RerankDocument]]
    top_n: int | None = None
    model: str | None = Field(None, description="accepted and ignored")
    max_tokens_per_doc: int | None = Field(None, description="accepted and ignored")
    priority: int | None = Field(None, description="accepted and ignored")
    return_documents: bool | None = Field(False, description="zenstore extension: echo documents")


class RerankDocumentOut(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="position in the request's documents")
    relevance_score: float = Field(description="the score mapped into [0, 1], higher is better")
    score: float = Field(description="the store's raw score (cosine/ip similarity, l2 squared distance)")
    stored_id: Id | None = Field(description="the stored id scored (None when embedded on the fly)")
    resolved_by: Literal["id", "text", "embedded"]
    document: RerankDocumentOut | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: float


class ApiMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: ApiMeta


class SearchRequest(_Strict):
    query: str | None = Field(None, description="text, embedded with the server's embedder")
    vector: VectorIn | None = None
    k: int = 10
    filter: dict[str, Any] | None = Field(None, description="a zenstore payload filter (docs/api.md, Filters)")
    nprobe: Union[int, Literal["all"], None] = Field(
        None, description='base rows to probe, or "all" for a full scan (default: the store\'s calibrated setting)')
    shortlist: int | None = None
    with_payload: bool = True


class SearchHit(BaseModel):
    id: Id
    score: float
    payload: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[SearchHit]


class UpsertRequest(_Strict):
    ids: list[Id]
    vectors: Annotated[list[Union[list[float], str]], SkipValidation] | None = Field(
        None, description="one per id (JSON list or base64 float32); omit to embed `texts`")
    texts: list[str] | None = Field(None, description="stored as payload[text_field]; embedded when "
                                                       "vectors are omitted")
    payloads: list[dict[str, Any] | None] | None = None


class UpsertResponse(BaseModel):
    upserted: int
    generation: int


class DeleteRequest(_Strict):
    ids: list[Id]
    missing_ok: bool = False


class DeleteResponse(BaseModel):
    deleted: int
    generation: int


class RecordResponse(BaseModel):
    id: Id
    payload: dict[str, Any] | None
    vector: Union[list[float], str, None] = None


class EmbeddingsRequest(_Strict):
    input: Union[str, list[str]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str]


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    message: str
    error: ErrorDetail
