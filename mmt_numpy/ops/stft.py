"""The short-time Fourier transform and the log-magnitude spectrogram: sound as an image (§6.3).

A sound track is one long row of samples.  To hand it to a Transformer the way an image is
handed over, it is first turned into a picture of *which frequencies sound when*:

1. **frame** it: windows of ``n_fft`` samples, each ``hop`` samples after the last;
2. **taper** each window with a window function ``w`` (Hann: ``w[n] = sin²(π n / n_fft)``),
   so the cut edges do not smear energy over every frequency;
3. **Fourier-transform** each window (the DFT, for ``k = 0 … n_fft/2``)::

       X[k, m] = Σ_n  w[n] x[m·hop + n] e^{−2πi k n / n_fft}

4. **log-magnitude**: ``S[k, m] = log(|X[k, m]| + eps)``: loudness is heard on a log
   scale, and the log turns a tone 100x louder than the noise into a difference of 4.6
   rather than a factor the later layers must learn to compress.

``S`` is ``(n_fft/2 + 1, frames)``: frequency down, time across, a one-channel image whose
patches (:class:`mmt_numpy.nn.SpectrogramPatchEmbedding`) become the sound's tokens, as the
Audio Spectrogram Transformer does.

These are forward-only functions: the spectrogram is a fixed preprocessing step applied
to the data before the model (like cutting an image into patches), with no parameters to
learn, so nothing is differentiated through it.  ``stft`` follows ``torch.stft``'s
conventions (``center``, reflect padding, a periodic Hann window, ``onesided``, the
``(..., freq, frames)`` layout) and matches it to rounding; :func:`dft_matrix` is the
textbook DFT the tests check ``np.fft.rfft`` against.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy.validate import float_array, positive_int, positive_number

PAD_MODES = ("reflect", "constant")


def hann_window(n: int, periodic: bool = True, dtype: object = np.float64) -> np.ndarray:
    """``(n,)`` Hann window ``0.5 − 0.5 cos(2π i / N)``; ``N = n`` if periodic, else ``n − 1``.

    The periodic form (``torch.hann_window``'s default) is the one whose shifted copies at
    hop ``n/2`` add up to a constant, so every sample counts equally in the frames.
    """
    n = positive_int("n", n)
    if n == 1:
        return np.ones(1, dtype=dtype)
    N = n if periodic else n - 1
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / N)).astype(dtype)


def dft_matrix(n: int, dtype: object = np.complex128) -> np.ndarray:
    """``(n, n//2 + 1)`` the one-sided DFT as a matrix: ``F[j, k] = e^{−2πi j k / n}``.

    ``frames @ F`` is the DFT of every frame, ``X[k] = Σ_j x[j] e^{−2πi jk/n}``, computed the
    direct way in O(n²) per frame; ``np.fft.rfft`` gives the same numbers in O(n log n).
    """
    n = positive_int("n", n)
    j = np.arange(n)[:, None]
    k = np.arange(n // 2 + 1)[None, :]
    return np.exp(-2j * np.pi * j * k / n).astype(dtype)


def frame_signal(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``signal (..., S)`` -> ``(..., frames, n_fft)`` with ``frames = 1 + (S − n_fft) // hop``.

    A read-only strided view: frame m is ``signal[..., m·hop : m·hop + n_fft]``; nothing
    is copied (overlapping frames share memory).
    """
    S = signal.shape[-1]
    if S < n_fft:
        raise ValueError(
            f"signal: expected at least n_fft={n_fft} samples to make one frame, got shape {signal.shape}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(signal, n_fft, axis=-1)  # (..., S - n_fft + 1, n_fft)
    return windows[..., ::hop, :]


def stft(
    signal: np.ndarray,
    n_fft: int,
    hop: int | None = None,
    window: np.ndarray | None = None,
    *,
    center: bool = True,
    pad_mode: str = "reflect",
) -> np.ndarray:
    """Short-time Fourier transform, one-sided, as ``torch.stft(..., return_complex=True)``.

    Args:
        signal: ``(..., S)`` float32 or float64 samples (any leading batch dimensions).
        n_fft: window length and DFT size.
        hop: samples between frame starts; default ``n_fft // 4`` (as torch).
        window: ``(n_fft,)`` of the signal's dtype; default :func:`hann_window` ``(n_fft)``.
            (torch's default is a rectangular window; pass one explicitly to compare.)
        center: pad ``n_fft // 2`` samples on both sides first, so frame m is centred on
            sample ``m·hop`` (then ``frames = 1 + S // hop``); else ``1 + (S − n_fft) // hop``.
        pad_mode: ``"reflect"`` (mirror the signal at its ends, torch's default; needs
            ``S > n_fft // 2``) or ``"constant"`` (zeros).

    Returns:
        ``(..., n_fft // 2 + 1, frames)`` complex64 for float32 input, complex128 for float64.
    """
    float_array("signal", signal, min_ndim=1)
    n_fft = positive_int("n_fft", n_fft)
    hop = max(n_fft // 4, 1) if hop is None else positive_int("hop", hop)
    if window is None:
        window = hann_window(n_fft, dtype=signal.dtype)
    float_array("window", window, ndim=1)
    if window.shape != (n_fft,):
        raise ValueError(f"window: expected shape ({n_fft},) (n_fft samples), got {window.shape}")
    if window.dtype != signal.dtype:
        raise TypeError(f"window: expected dtype {signal.dtype} (the signal's), got {window.dtype}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode: expected one of {PAD_MODES}, got {pad_mode!r}")
    if center:
        half = n_fft // 2
        if pad_mode == "reflect" and signal.shape[-1] <= half:
            raise ValueError(
                f"signal: reflect padding by n_fft // 2 = {half} needs more than {half} samples, "
                f"got shape {signal.shape}; use pad_mode='constant' or a smaller n_fft"
            )
        widths = [(0, 0)] * (signal.ndim - 1) + [(half, half)]
        signal = np.pad(signal, widths, mode=pad_mode)
    framed = frame_signal(signal, n_fft, hop)  # (..., frames, n_fft)
    spectrum = np.fft.rfft(framed * window, axis=-1)  # (..., frames, n_fft//2 + 1)
    return spectrum.swapaxes(-1, -2)  # (..., freq, frames), torch's layout


def log_spectrogram(
    signal: np.ndarray,
    n_fft: int,
    hop: int | None = None,
    window: np.ndarray | None = None,
    *,
    center: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """``log(|stft(signal)| + eps)``: ``(..., n_fft // 2 + 1, frames)`` real, the signal's dtype.

    ``eps`` keeps a silent bin finite (``log 0 = −∞``): the floor is ``log eps``.  The other
    arguments are those of :func:`stft`.
    """
    eps = positive_number("eps", eps)
    magnitude = np.abs(stft(signal, n_fft, hop, window, center=center))
    return np.log(magnitude + eps).astype(signal.dtype)
