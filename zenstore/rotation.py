"""A fast random orthogonal transform applied before sign quantization.

Sign bits lose the least when the residual's coordinates have similar magnitudes; real
embeddings have a few dominant coordinates. A random rotation spreads every direction
over all coordinates. A dense random matrix at 7680 dims costs 236 MB and ~11 ms per
query, so zenstore uses a structured one: ``rounds`` times (random sign flips, a random
permutation, a block Walsh-Hadamard transform over blocks of the largest power of two
dividing ``dim``). Two rounds let every output depend on ``block^2 >= dim`` inputs (512^2
at 7680); dimensions with a small power-of-two factor get a third round. That is O(dim log dim) per vector and exactly orthogonal, so inner
products and distances are unchanged and the inverse is exact.

The signs and permutations are stored in the base file (never re-derived from a seed, so
a NumPy RNG change cannot silently change a stored store's transform).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import numba

from .format import coded_dim
from .kernels.hadamard import rotate_range, rotate_rows, unrotate_rows

MAX_BLOCK = 4096
PARALLEL_ROWS = 16


def hadamard_block(dim: int) -> int:
    """Largest power of two dividing ``dim``, capped at MAX_BLOCK."""
    return min(dim & -dim, MAX_BLOCK)


@dataclass(frozen=True)
class Rotation:
    """x -> rotated x. ``signs`` (rounds, width) of +-1 and ``perms`` (rounds, width).

    The width is the coded width (a multiple of 64): a rotation made for ``dim``
    coordinates acts on vectors zero-padded to ``format.coded_dim(dim)``, which is what
    ``validation.as_matrix`` hands the codec.
    """

    signs: np.ndarray
    perms: np.ndarray

    @property
    def dim(self) -> int:
        """The width the tables act on (the coded width)."""
        return self.signs.shape[1]

    @classmethod
    def identity(cls, dim: int) -> Rotation:
        dim = coded_dim(dim)
        return cls(np.ones((0, dim), dtype=np.int8), np.zeros((0, dim), dtype=np.uint32))

    @classmethod
    def random(cls, dim: int, seed: int, rounds: int | None = None) -> Rotation:
        dim = coded_dim(dim)  # the same tables as for a 64-multiple store of the padded width
        if rounds is None:
            rounds = 2 if hadamard_block(dim) ** 2 >= dim else 3
        rng = np.random.default_rng([seed, 0x5A17])
        signs = np.where(rng.random((rounds, dim)) < 0.5, -1, 1).astype(np.int8)
        perms = np.stack([rng.permutation(dim) for _ in range(rounds)]).astype(np.uint32)
        return cls(signs, perms)

    @property
    def is_identity(self) -> bool:
        return self.signs.shape[0] == 0

    def validate(self, dim: int) -> None:
        dim = coded_dim(dim)
        if self.signs.shape != self.perms.shape or self.signs.shape[1:] != (dim,):
            raise ValueError("rotation tables do not match the dimension")
        if not np.all(np.abs(self.signs) == 1):
            raise ValueError("rotation signs must be +1 or -1")
        ref = np.arange(dim)
        for p in self.perms:
            if not np.array_equal(np.sort(p), ref):
                raise ValueError("rotation permutation is not a permutation")

    def apply(self, x: np.ndarray, out: np.ndarray | None = None, normalize: bool = False) -> np.ndarray:
        """Rotate the rows of ``x`` into ``out`` (a new float32 array by default), first
        scaling each row to unit length if ``normalize`` (all-zero rows stay zero)."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        if out is None:
            out = np.empty_like(x)
        # the identity still runs the kernel (zero rounds) so normalisation is shared
        if x.shape[0] < PARALLEL_ROWS:  # a parallel launch would cost more than the work
            rotate_range(x, self.signs, self.perms, hadamard_block(self.dim), out, 0, x.shape[0],
                         normalize)
        else:
            rotate_rows(x, self.signs, self.perms, hadamard_block(self.dim), out,
                        4 * numba.get_num_threads(), normalize)
        return out

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`."""
        y = np.ascontiguousarray(np.atleast_2d(y), dtype=np.float32)
        if self.is_identity:
            return y.copy()
        out = np.empty_like(y)
        unrotate_rows(y, self.signs, self.perms, hadamard_block(self.dim), out)
        return out
