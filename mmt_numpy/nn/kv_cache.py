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

Streaming past the trained length (:class:`StreamingKVCache`).  StreamingLLM's finding is
that a window alone fails once the first tokens leave it: a trained model parks much of its
attention mass on the first few tokens (the *attention sinks*), and without them the
softmax spreads that mass over the window.  Keeping ``sinks`` first tokens plus a window of
the last ``window`` tokens holds the memory at ``sinks + window`` entries however long the
stream.  The second half of the recipe is the positions: the cache does **not** give its
entries their original positions (token 20 000 would sit at a distance the model never saw
in training) but their *slots in the cache*, ``0 … n − 1``; the new query is the last slot.
The keys are stored unrotated, so RoPE rotates them at attention time by their slot, and
ALiBi measures its distances between slots (:meth:`MultiHeadAttention.attend` with
``positions=cache.attend_positions(layer)``).  A window key then keeps its true distance to
the query (the window is contiguous), while a sink is at distance ``sinks + window − 1 − j``
at most, inside the trained range.  ``PositionScheme(window=..., sinks=...)`` computes the
same over a whole sequence at once, so a stream fed token by token equals the scheme's
forward at every position (the tests check this to 1e-12 in float64).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmt_numpy.nn.module import as_float_dtype
from mmt_numpy.validate import positive_int

EvictionPolicy = Callable[[int], "np.ndarray | None"]


def step_mask(cached: int, new: int) -> np.ndarray:
    """``(new, cached + new)`` bool: ``new`` queries after ``cached`` kept entries (True = may attend).

    Every query sees every kept entry (all of them are earlier positions) and, among the
    new positions, itself and those before it: the causal mask's last ``new`` rows when
    nothing was evicted.
    """
    keep_new = np.tril(np.ones((new, new), dtype=bool))
    return np.concatenate([np.ones((new, cached), dtype=bool), keep_new], axis=1)


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

    @classmethod
    def for_layers(
        cls,
        num_layers: int,
        batch: int,
        num_heads: int,
        head_dim: int,
        *,
        dtype: object = np.float64,
        **kwargs: object,
    ) -> KVCache:
        """An empty cache for a decoder-only stack (no image): its cross-attention entries are
        empty, ``(batch, num_heads, 0, head_dim)``, and never read.  ``kwargs`` go to the constructor."""
        num_layers = positive_int("num_layers", num_layers)
        shape = (positive_int("batch", batch), positive_int("num_heads", num_heads), 0)
        empty = np.empty((*shape, positive_int("head_dim", head_dim)), dtype=as_float_dtype(dtype))
        return cls([(empty, empty)] * num_layers, **kwargs)

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the buffers as allocated (room included), plus the image's keys and values."""
        return sum(b.nbytes for b in self._buffers) + sum(k.nbytes + v.nbytes for k, v in self.cross)

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

    def attend_positions(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The positions a position scheme should use in this step of layer ``layer``.

        Returns ``(query_positions (n,), key_positions (length + n,))``, int64: here the
        original positions of the kept entries (:attr:`positions`) and of the new ones.
        :class:`StreamingKVCache` returns the slots in the cache instead.
        """
        n = self._pending[layer]
        new = np.arange(self.seen, self.seen + n)
        return new, np.concatenate([self.positions, new])

    def attend(self, layer: int, attention: object, x: np.ndarray) -> np.ndarray:
        """Causal self-attention of the new positions ``x (B, n, d_model)`` over this layer's entries.

        Projects ``x``'s keys and values with ``attention`` (a
        :class:`~mmt_numpy.nn.MultiHeadAttention`), appends them, and lets the new queries
        attend over everything kept and over themselves causally (:func:`step_mask`), at the
        positions of :meth:`attend_positions`.  Returns ``(B, n, d_model)``.
        """
        keys, values = self.append(layer, *attention.keys_values(x))
        mask = step_mask(keys.shape[2] - x.shape[1], x.shape[1])
        return attention.attend(x, keys, values, mask, positions=self.attend_positions(layer))

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


class SinksAndWindow:
    """The eviction policy of :class:`StreamingKVCache`: keep the first ``sinks`` entries and the
    last ``window − 1``, so that the next step's query sees the sinks and a window of
    ``window`` tokens, itself included (as ``PositionScheme(window=window, sinks=sinks)``).

    ``policy(length)`` returns None while ``length <= sinks + window − 1`` (nothing to evict).
    """

    def __init__(self, sinks: int, window: int) -> None:
        if isinstance(sinks, bool) or not isinstance(sinks, (int, np.integer)) or sinks < 0:
            raise ValueError(f"sinks: expected an integer >= 0 (the first tokens kept), got {sinks!r}")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(
                f"window: expected an integer >= 1 (the last tokens seen, the query included), got {window!r}"
            )
        self.sinks, self.window = int(sinks), int(window)

    def __call__(self, length: int) -> np.ndarray | None:
        recent = self.window - 1  # the room left for the next token
        if length <= self.sinks + recent:
            return None
        return np.r_[0 : self.sinks, length - recent : length]

    def __repr__(self) -> str:
        return f"SinksAndWindow(sinks={self.sinks}, window={self.window})"


class StreamingKVCache(KVCache):
    """A KV cache of bounded size for streaming past the trained length (StreamingLLM).

    Keeps the first ``sinks`` tokens and a sliding window: a step's query sees the sinks and
    the last ``window`` tokens, itself included; between steps ``sinks + window − 1`` entries
    per layer are kept, so the memory stays flat however many tokens stream through
    (:attr:`nbytes`, :attr:`allocated_bytes`).  Positions are the slots in the cache
    (module docstring): :meth:`attend_positions` returns ``0 … n − 1`` for the keys and the
    last slots for the new queries, whatever :attr:`seen` has reached.

    Args:
        cross, memory_mask: as :class:`KVCache` (:meth:`KVCache.for_layers` makes a cache
            without an image for a decoder-only model).
        sinks: how many first tokens to keep, >= 0 (StreamingLLM uses 4).
        window: how many recent tokens a query sees, itself included, >= 1.
    """

    def __init__(
        self,
        cross: list[tuple[np.ndarray, np.ndarray]],
        memory_mask: np.ndarray | None = None,
        *,
        sinks: int,
        window: int,
    ) -> None:
        policy = SinksAndWindow(sinks, window)
        super().__init__(cross, memory_mask, policy=policy, capacity=policy.sinks + policy.window)
        self.sinks, self.window = policy.sinks, policy.window

    def attend_positions(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``(query_positions (n,), key_positions (length + n,))``: slots ``0 … length + n − 1``,
        the new queries in the last ``n``."""
        total = self.length + self._pending[layer]
        return np.arange(self.length, total), np.arange(total)

    def __repr__(self) -> str:
        return (
            super()
            .__repr__()
            .replace("KVCache(", "StreamingKVCache(", 1)
            .replace(f"policy={self.policy!r}", f"sinks={self.sinks}, window={self.window}")
        )
