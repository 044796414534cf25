"""zenstore: an embedded storage engine for 1-bit compressed high-dimensional embeddings.

Quick start::

    import numpy as np, zenstore
    with zenstore.Store.create("my.zen", dim=384) as store:
        store.add([1, 2], np.random.rand(2, 384), payloads=[{"t": "a"}, {"t": "b"}])
        hits = store.search(np.random.rand(384), k=1)
"""

import logging as _logging

_logging.getLogger("zenstore").addHandler(_logging.NullHandler())  # before any module logs

from .kernels import _threads  # noqa: E402,F401  (environment defaults, before numpy loads OpenBLAS)

from .version import __version__  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .errors import __all__ as _error_names  # noqa: E402
from .format import FORMAT_VERSION, StoreConfig  # noqa: E402
from .basefile import BaseMatrix  # noqa: E402
from .store import Store  # noqa: E402
from .verify import verify_store  # noqa: E402
from .types import Hit, Record, SearchOptions  # noqa: E402
from .rerank import Reranker, RerankResult  # noqa: E402

__all__ = ["Store", "verify_store", "BaseMatrix", "StoreConfig", "Hit", "Record", "SearchOptions", "FORMAT_VERSION",
           "Reranker", "RerankResult", "__version__", *_error_names]
