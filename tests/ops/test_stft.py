"""The short-time Fourier transform (§6.3): the same numbers as a direct DFT written out as a sum,
as ``torch.stft`` (float64, 1e-10) with every padding mode, a tone lands in its bin, the
log-magnitude spectrogram, and bad input refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.ops.stft import dft_matrix, frame_signal, hann_window, log_spectrogram, stft


def direct_stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """``X[k, m] = Σ_n w[n] x[m·hop + n] e^{−2πi kn/N}`` with two Python loops: the definition."""
    frames = 1 + (len(x) - n_fft) // hop
    out = np.zeros((n_fft // 2 + 1, frames), dtype=complex)
    n = np.arange(n_fft)
    for m in range(frames):
        segment = window * x[m * hop : m * hop + n_fft]
        for k in range(n_fft // 2 + 1):
            out[k, m] = np.sum(segment * np.exp(-2j * np.pi * k * n / n_fft))
    return out


@pytest.mark.parametrize(("n_fft", "hop", "length"), [(16, 4, 100), (32, 16, 257), (15, 7, 60), (8, 8, 8)])
def test_stft_is_the_direct_dft_of_windowed_frames(n_fft, hop, length):
    x = np.random.default_rng(n_fft).standard_normal(length)
    window = hann_window(n_fft)
    ours = stft(x, n_fft, hop, window, center=False)
    np.testing.assert_allclose(ours, direct_stft(x, n_fft, hop, window), rtol=0, atol=1e-10)
    # and the matrix form of the notebook: frames @ F
    matrix = (frame_signal(x, n_fft, hop) * window) @ dft_matrix(n_fft)
    np.testing.assert_allclose(ours, matrix.T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize(("n_fft", "hop"), [(128, 64), (64, 16), (31, 10)])
def test_stft_matches_torch(center, pad_mode, n_fft, hop):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((2, 3, 700))  # batch dimensions are kept
    window = hann_window(n_fft)
    ours = stft(x, n_fft, hop, window, center=center, pad_mode=pad_mode)
    theirs = torch.stft(
        torch.from_numpy(x.reshape(6, 700)),
        n_fft,
        hop,
        window=torch.from_numpy(window),
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    ).numpy()
    assert ours.shape == (2, 3, *theirs.shape[1:])
    np.testing.assert_allclose(ours.reshape(theirs.shape), theirs, rtol=0, atol=1e-10)


def test_hann_window_matches_torch_and_numpy():
    torch = pytest.importorskip("torch")
    for n in (1, 2, 7, 128):
        np.testing.assert_allclose(
            hann_window(n), torch.hann_window(n, dtype=torch.float64).numpy(), atol=1e-15
        )
        np.testing.assert_allclose(
            hann_window(n, periodic=False),
            torch.hann_window(n, periodic=False, dtype=torch.float64).numpy(),
            atol=1e-15,
        )
    np.testing.assert_allclose(hann_window(9, periodic=False), np.hanning(9), atol=1e-15)


def test_periodic_hann_windows_at_half_overlap_add_up_to_one():
    w = hann_window(64)
    total = np.zeros(64 * 5)
    for start in range(0, 64 * 4 + 1, 32):
        total[start : start + 64] += w
    np.testing.assert_allclose(total[64:-64], 1.0, atol=1e-12)


def test_a_tone_lands_in_its_bin():
    rate, n_fft = 4000, 128
    t = np.arange(4000) / rate
    x = np.sin(2 * np.pi * 1250.0 * t)  # 1250 Hz = bin 40 of 31.25 Hz
    spec = log_spectrogram(x, n_fft, 64, center=False)
    assert spec.shape == (65, 61)
    assert np.all(spec.argmax(axis=0) == 40)
    # a Hann-windowed sine of amplitude 1 peaks at |X| = Σw / 2 = n_fft / 4
    np.testing.assert_allclose(np.exp(spec[40]), n_fft / 4, rtol=1e-3)


def test_log_spectrogram_is_log_magnitude_plus_eps_and_finite_on_silence():
    x = np.random.default_rng(0).standard_normal(300)
    np.testing.assert_allclose(log_spectrogram(x, 32, 8), np.log(np.abs(stft(x, 32, 8)) + 1e-6), atol=1e-12)
    silent = log_spectrogram(np.zeros(300), 32, 8, eps=1e-4)
    np.testing.assert_allclose(silent, np.log(1e-4))


def test_float32_stays_single_precision():
    x = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    assert stft(x, 64, 16).dtype == np.complex64
    assert log_spectrogram(x, 64, 16).dtype == np.float32
    np.testing.assert_allclose(stft(x, 64, 16), stft(x.astype(np.float64), 64, 16), atol=1e-4)


def test_frames_are_a_view_with_the_right_count():
    x = np.arange(20.0)
    frames = frame_signal(x, 8, 3)
    assert frames.shape == (5, 8)  # 1 + (20 - 8) // 3
    np.testing.assert_array_equal(frames[2], x[6:14])
    assert np.shares_memory(frames, x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(signal=np.zeros(10), n_fft=16, center=False),
            ValueError,
            r"signal: expected at least n_fft=16 samples",
        ),
        (
            dict(signal=np.zeros(6), n_fft=16),
            ValueError,
            r"reflect padding by n_fft // 2 = 8 needs more than 8",
        ),
        (dict(signal=np.zeros(100), n_fft=16, hop=0), ValueError, r"hop: expected a positive integer"),
        (dict(signal=np.zeros(100), n_fft=0), ValueError, r"n_fft: expected a positive integer"),
        (
            dict(signal=np.zeros(100), n_fft=16, window=np.ones(15)),
            ValueError,
            r"window: expected shape \(16,\)",
        ),
        (
            dict(signal=np.zeros(100), n_fft=16, window=np.ones(16, np.float32)),
            TypeError,
            r"window: expected dtype float64",
        ),
        (
            dict(signal=np.zeros(100, np.int64), n_fft=16),
            TypeError,
            r"signal: expected dtype float32 or float64",
        ),
        (dict(signal=np.zeros(100), n_fft=16, pad_mode="wrap"), ValueError, r"pad_mode: expected one of"),
    ],
)
def test_bad_input_is_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        stft(**kwargs)


def test_short_signals_work_with_constant_padding():
    assert stft(np.ones(6), 16, 4, pad_mode="constant").shape == (9, 2)
