"""The key-value cache of autoregressive decoding (§6.2): what each decoder layer has already projected.

A decoder writes one token at a time.  Without a cache, step t runs the whole prefix of t
tokens through every layer again, although the keys and values of positions ``0 … t−2`` are
exactly what step t−1 computed: causal self-attention lets no earlier position see a later
one, so an earlier position's hidden states never change.  Only the *new* position needs its
query, key and value.  A cache keeps, per decoder layer,

* the **self-attention** keys and values of every position so far, ``(B, H, L, d_h)`` each,
  one block appended per step (:meth:`KVCache.append`);
* the **cross-attention** keys and values of the image, ``(B, H, Lm, d_h)`` each, projected
  once from the encoder's memory when the cache is made: the memory does not change while
  the caption is written, so neither do they.

A step then costs one query row per layer instead of t, and the cached run gives the same
numbers as the full recomputation (the tests compare them to 1e-12 in float64).  The price
is memory: ``2 · num_layers · B · L · d_model`` numbers for the self-attention entries, plus
``2 · num_layers · B · Lm · d_model`` for the image (:attr:`KVCache.nbytes`).

Positions.  The cache counts the tokens it was given (:attr:`KVCache.seen`, the position of
the next token) and remembers the position of every entry it keeps
(:attr:`KVCache.positions`).  Keys are stored as the projections return them, *before*
anything position-dependent: a rotary (RoPE) or linear-bias (ALiBi) scheme applies positions
at attention time, so it can use the original positions or the slots inside the cache.

Eviction.  After each step the cache asks its ``policy`` which entries to keep.  A policy is
any callable ``policy(length) -> indices``: given the number of entries now cached it returns
the sorted indices to keep (or None: keep all).  The kept entries move to the front in that
order, their positions with them; the next step's query attends to them and to itself.
Worked example, attention sinks plus a sliding window (StreamingLLM, Xiao et al. 2023):
keep the first 2 entries and the last 3::

    >>> import numpy as np
    >>> def sinks_and_window(length, sinks=2, window=3):
    ...     if length <= sinks + window:
    ...         return None                        # nothing to evict yet
    ...     return np.r_[0:sinks, length - window:length]
    >>> sinks_and_window(7).tolist()               # 7 cached: keep 0, 1 and 4, 5, 6
    [0, 1, 4, 5, 6]

With it, after the 7th token the cache holds the entries of positions ``[0, 1, 4, 5, 6]``;
after the 8th it holds 6 entries, ``[0, 1, 4, 5, 6, 7]``, and evicts to
``[0, 1, 5, 6, 7]``.  Evicting makes the cached run differ from the full recomputation on
purpose: the query no longer sees what was dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EvictionPolicy = Callable[[int], "np.ndarray | None"]


class KVCache:
    """Per-layer self-attention keys/values (growing) and cross-attention keys/values (fixed).

    Made by :meth:`mmt_numpy.nn.TransformerDecoder.new_cache`; filled by its ``step``, which
    calls :meth:`append` once per layer and then :meth:`commit`.

    Args:
        cross: one ``(keys, values)`` pair per decoder layer, each ``(B, H, Lm, d_h)``: the
            image's cross-attention keys and values (``MultiHeadAttention.keys_values``).
        memory_mask: the cross-attention mask by the module rule (e.g. ``(B, 1, 1, Lm)`` key
            padding of the image) or None; kept here so that :meth:`reorder` moves it with
            the rows.
        policy: the eviction policy (module docstring), or None to keep every entry.
        capacity: initial room for self-attention entries (grows by doubling).
    """

    def __init__(
        self,
        cross: list[tuple[np.ndarray, np.ndarray]],
        memory_mask: np.ndarray | None = None,
        *,
        policy: EvictionPolicy | None = None,
        capacity: int = 16,
    ) -> None:
        if not cross:
            raise ValueError("cross: expected one (keys, values) pair per decoder layer, got none")
        if policy is not None and not callable(policy):
            raise TypeError(
                f"policy: expected a callable policy(length) -> indices, got {type(policy).__name__}"
            )
        B, H, _, d_h = cross[0][0].shape
        for i, (k, v) in enumerate(cross):
            if (
                k.shape != v.shape
                or k.shape[:2] != (B, H)
                or k.shape[3] != d_h
                or k.dtype != cross[0][0].dtype
            ):
                raise ValueError(
                    f"cross: expected every layer's keys and values of shape ({B}, {H}, Lm, {d_h}) and one "
                    f"dtype, got layer {i}: {k.shape} {k.dtype} and {v.shape} {v.dtype}"
                )
        self.dtype = cross[0][0].dtype
        self.cross = [(np.ascontiguousarray(k), np.ascontiguousarray(v)) for k, v in cross]
        self.memory_mask = memory_mask
        self.policy = policy
        self._shape = (B, H, d_h)
        self._buffers = [self._empty(max(int(capacity), 1)) for _ in cross]  # (2, B, H, capacity, d_h)
        self._pending = [0] * len(cross)  # entries appended to each layer in the current step
        self.length = 0  # entries kept
        self.seen = 0  # tokens given so far = the position of the next token
        self.positions = np.zeros(0, dtype=np.int64)  # (length,) the position of each kept entry

    def _empty(self, capacity: int) -> np.ndarray:
        B, H, d_h = self._shape
        return np.empty((2, B, H, capacity, d_h), dtype=self.dtype)

    @property
    def num_layers(self) -> int:
        return len(self.cross)

    @property
    def batch(self) -> int:
        return self._shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept entries: self-attention keys and values plus the image's."""
        B, H, d_h = self._shape
        itemsize = np.dtype(self.dtype).itemsize
        own = 2 * self.num_layers * B * H * self.length * d_h * itemsize
        return own + sum(k.nbytes + v.nbytes for k, v in self.cross)

    def keys_values(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer ``layer``'s kept self-attention keys and values, ``(B, H, length, d_h)`` each (views)."""
        n = self.length + self._pending[layer]
        buffer = self._buffers[layer]
        return buffer[0, :, :, :n], buffer[1, :, :, :n]

    def append(self, layer: int, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add this step's keys and values ``(B, H, n, d_h)`` to layer ``layer``.

        Returns that layer's keys and values including them, ``(B, H, length + n, d_h)`` (views,
        valid until the next append or commit): what the step's queries attend over.  Every
        layer appends the same ``n`` once per step, then :meth:`commit` ends the step.
        """
        B, H, d_h = self._shape
        if keys.shape != values.shape or keys.ndim != 4 or keys.shape[:2] != (B, H) or keys.shape[3] != d_h:
            raise ValueError(
                f"keys: expected keys and values of one shape ({B}, {H}, n, {d_h}), got {keys.shape} "
                f"and {values.shape}"
            )
        if self._pending[layer]:
            raise ValueError(f"layer: layer {layer} already appended in this step; call commit() first")
        n = keys.shape[2]
        if any(p not in (0, n) for p in self._pending):
            raise ValueError(
                f"keys: expected {max(self._pending)} new positions as the other layers, got {n}"
            )
        needed = self.length + n
        buffer = self._buffers[layer]
        if needed > buffer.shape[3]:
            grown = self._empty(max(needed, 2 * buffer.shape[3]))
            grown[:, :, :, : self.length] = buffer[:, :, :, : self.length]
            self._buffers[layer] = buffer = grown
        buffer[0, :, :, self.length : needed] = keys
        buffer[1, :, :, self.length : needed] = values
        self._pending[layer] = n
        return self.keys_values(layer)

    def commit(self) -> None:
        """End a step: every layer has appended its ``n`` entries; count them, then evict."""
        n = self._pending[0]
        if any(p != n for p in self._pending) or n == 0:
            raise ValueError(
                f"commit: expected every layer to have appended the same entries, got {self._pending}"
            )
        self.positions = np.concatenate([self.positions, np.arange(self.seen, self.seen + n)])
        self.length += n
        self.seen += n
        self._pending = [0] * self.num_layers
        if self.policy is not None:
            self._evict(self.policy(self.length))

    def _evict(self, keep: object) -> None:
        if keep is None:
            return
        keep = np.asarray(keep)
        if keep.ndim != 1 or not np.issubdtype(keep.dtype, np.integer):
            raise TypeError(
                f"policy: expected a 1-D integer array of indices to keep, got {keep.dtype} {keep.shape}"
            )
        if keep.size and (keep[0] < 0 or keep[-1] >= self.length or np.any(np.diff(keep) <= 0)):
            raise ValueError(
                f"policy: expected increasing indices in [0, {self.length}), got {keep.tolist()}"
            )
        for buffer in self._buffers:
            # the fancy index copies first, so moving entries forward cannot overwrite one still to move
            buffer[:, :, :, : keep.size] = buffer[:, :, :, keep]
        self.positions = self.positions[keep]
        self.length = int(keep.size)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep batch rows ``rows`` in that order (repeats allowed): a beam search's parents, or
        the rows of a batch still generating.  Applies to every layer, the image's keys and
        values and the memory mask."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or rows.size == 0:
            raise ValueError(f"rows: expected a non-empty 1-D integer array, got {rows.dtype} {rows.shape}")
        if rows.min() < 0 or rows.max() >= self.batch:
            raise ValueError(f"rows: expected indices in [0, {self.batch}), got {rows.min()} … {rows.max()}")
        if any(self._pending):
            raise ValueError("rows: cannot reorder in the middle of a step; call commit() first")
        self._buffers = [np.ascontiguousarray(b[:, rows]) for b in self._buffers]
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        mask = self.memory_mask
        if mask is not None and mask.ndim >= 3 and mask.shape[0] == self.batch:
            self.memory_mask = mask[rows]  # a per-row mask follows its rows; a shared one stays
        self._shape = (int(rows.size), *self._shape[1:])

    def __repr__(self) -> str:
        B, H, d_h = self._shape
        return (
            f"KVCache(layers={self.num_layers}, batch={B}, heads={H}, d_h={d_h}, length={self.length}, "
            f"seen={self.seen}, policy={self.policy!r})"
        )
