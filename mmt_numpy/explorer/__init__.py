"""An attention explorer in the browser: one self-contained HTML page per model and batch.

``python -m mmt_numpy explore`` and :func:`mmt_numpy.viz.explore` build it.  The page has
three views of every layer's and head's attention weights (from the forward cache,
``cache.weights``): a head view (tokens in two columns, lines whose opacity is the weight,
heads in their colours), a model view (a small heat map per layer and head, one click
enlarges it) and a cross-modal view (a word's attention laid over the image patches, or the
words attending to one patch, with an attention-rollout toggle).

Everything is inline: the stylesheet, the script (plain JavaScript, ``explorer.js``) and the
weights as JSON, so the file opens from disk in any browser, without a network.
"""

from mmt_numpy.explorer.page import ExplorerPage, dequantise, explore, quantise

__all__ = ["ExplorerPage", "dequantise", "explore", "quantise"]
