import os

import numpy as np
import pytest

SLOW_ENV = "ZENSTORE_SLOW"


def slow_run() -> bool:
    """The one switch for long runs: ``--runslow`` or ``ZENSTORE_SLOW=1``.

    ``--runslow`` sets the variable, so child processes and module-level counts read at
    collection (after ``pytest_configure``) agree with the command line.
    """
    return os.environ.get(SLOW_ENV) == "1"


def scale(normal, slow):
    """``slow`` in a long run, else ``normal``: for tests that just try more cases.

    Whole tests that only belong in long runs take ``@pytest.mark.slow`` instead.
    """
    return slow if slow_run() else normal


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run slow tests and full fault-injection counts")


def pytest_configure(config):
    if config.getoption("--runslow"):
        os.environ[SLOW_ENV] = "1"


def pytest_collection_modifyitems(config, items):
    if slow_run():
        return
    skip = pytest.mark.skip(reason="slow: use --runslow or ZENSTORE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _zygote_closed_at_the_end():
    """Ends (and reaps) tests/_zygote.py's server if a test started it."""
    yield
    from tests._zygote import SHARED

    SHARED.close()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.zen")


def clustered(rng, n, dim, n_clusters=8, spread=0.6):
    """Small clustered float32 data: enough structure for k-means, cheap to make."""
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    x = centers[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    """One real ``zenstore serve`` (keys read / write / admin, an embedder, small limits) for
    tests/test_server_http.py and test_server_clients.py: a start-up costs seconds, so the
    two modules share it. Tests that write clean up what they wrote."""
    from tests._server import EMBEDDER, LIMITS, Server, build_store
    from zenstore.server import add_key

    root = tmp_path_factory.mktemp("api")
    build_store(root / "docs.zen", n=200)
    keys = root / "keys.json"
    scoped = {scope: add_key(str(keys), scope)[0] for scope in ("read", "write", "admin")}
    with Server(root / "docs.zen", "--embedder", EMBEDDER, "--api-key-file", str(keys), *LIMITS) as srv:
        srv.keys, srv.keys_file = scoped, str(keys)
        yield srv
