"""One JSON error shape for every refused request, and the HTTP status of each zenstore error.

Bodies are ``{"message": ..., "error": {"type": ..., "message": ...}}``: Cohere's clients
read ``message``, OpenAI-style clients (and zenstore's own ``OpenAIEmbedder``) read
``error.message``. ``type`` is a stable, machine-readable name.
"""

from __future__ import annotations

from .. import errors as zerr


class ApiError(Exception):
    """A request the server refuses: an HTTP status, a stable type and a message naming
    the problem. Raised before anything is changed."""

    def __init__(self, status: int, type_: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.type, self.message)


def error_body(type_: str, message: str) -> dict:
    return {"message": message, "error": {"type": type_, "message": message}}


# most specific first: the first class an exception is an instance of decides
_STATUS: list[tuple[type, int, str]] = [
    (zerr.IdNotFound, 404, "not_found"),
    (zerr.InvalidFilter, 422, "invalid_filter"),
    (zerr.DimensionMismatch, 422, "dimension_mismatch"),
    (zerr.InvalidVector, 422, "invalid_vector"),
    (zerr.DuplicateId, 422, "duplicate_id"),
    (zerr.IdTypeMismatch, 422, "id_type_mismatch"),
    (zerr.InvalidArgument, 422, "invalid_argument"),
    (zerr.ReadOnlyStore, 403, "read_only"),
    (zerr.StorageFull, 507, "storage_full"),
    (zerr.StoreLocked, 503, "store_locked"),
    (zerr.StoreClosed, 503, "store_closed"),
    (zerr.EmbedderError, 502, "embedder_error"),
    (zerr.CorruptStore, 500, "corrupt_store"),
    (zerr.StoreIOError, 500, "store_io_error"),
]


def status_of(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error type) for a zenstore error (500 for anything unexpected)."""
    for cls, status, type_ in _STATUS:
        if isinstance(exc, cls):
            return status, type_
    return 500, "internal_error"


def from_exception(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    status, type_ = status_of(exc)
    message = str(exc) if isinstance(exc, zerr.ZenstoreError) else f"internal error: {type(exc).__name__}: {exc}"
    return ApiError(status, type_, message)
