"""How our parameters map onto PyTorch's, for the parity tests.

PyTorch computes ``x @ weight.T``, so each of its weight matrices is ours transposed;
``nn.MultiheadAttention`` stacks the three input projections into one ``in_proj_weight``
when the key/value width equals the model width.  The mapping is written out here, once,
so that a reader can follow it and every parity test uses the same one.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy.nn import MultiHeadAttention, TransformerEncoderLayer


def mha_to_torch(ours: MultiHeadAttention, theirs) -> None:
    """Copy our parameters into a ``torch.nn.MultiheadAttention``.

    PyTorch computes ``x @ weight.T``, so every weight is our matrix transposed.  With equal
    widths it stacks the three input projections in one ``in_proj_weight (3D, D)``:
    rows ``0:D`` are ``W_qᵀ``, ``D:2D`` are ``W_kᵀ``, ``2D:3D`` are ``W_vᵀ``; with another
    key/value width (``kdim``) it keeps them apart as ``q/k/v_proj_weight``.
    """
    import torch

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy())

    with torch.no_grad():
        if theirs._qkv_same_embed_dim:
            stacked = np.concatenate([ours.W_q.data.T, ours.W_k.data.T, ours.W_v.data.T])  # (3D, D)
            theirs.in_proj_weight.copy_(t(stacked))
        else:
            theirs.q_proj_weight.copy_(t(ours.W_q.data.T))
            theirs.k_proj_weight.copy_(t(ours.W_k.data.T))
            theirs.v_proj_weight.copy_(t(ours.W_v.data.T))
        theirs.out_proj.weight.copy_(t(ours.W_o.data.T))
        if ours.b_q is not None:
            theirs.in_proj_bias.copy_(t(np.concatenate([ours.b_q.data, ours.b_k.data, ours.b_v.data])))
            theirs.out_proj.bias.copy_(t(ours.b_o.data))


def mha_grads_from_torch(theirs) -> dict[str, np.ndarray]:
    """PyTorch's parameter gradients under our names (transposed and split back)."""
    D = theirs.embed_dim
    grads = {"W_o": theirs.out_proj.weight.grad.numpy().T}
    if theirs._qkv_same_embed_dim:
        g = theirs.in_proj_weight.grad.numpy()
        grads.update(W_q=g[:D].T, W_k=g[D : 2 * D].T, W_v=g[2 * D :].T)
    else:
        grads.update(
            W_q=theirs.q_proj_weight.grad.numpy().T,
            W_k=theirs.k_proj_weight.grad.numpy().T,
            W_v=theirs.v_proj_weight.grad.numpy().T,
        )
    if theirs.in_proj_bias is not None:
        b = theirs.in_proj_bias.grad.numpy()
        grads.update(b_q=b[:D], b_k=b[D : 2 * D], b_v=b[2 * D :], b_o=theirs.out_proj.bias.grad.numpy())
    return grads


# Our name -> PyTorch's name (and whether PyTorch stores the transpose) for the parts of a
# layer other than self-attention, whose in_proj split is in mha_to_torch.
LAYER_NAMES = {
    "linear1.W": ("linear1.weight", True),
    "linear1.b": ("linear1.bias", False),
    "linear2.W": ("linear2.weight", True),
    "linear2.b": ("linear2.bias", False),
    "norm1.gamma": ("norm1.weight", False),
    "norm1.beta": ("norm1.bias", False),
    "norm2.gamma": ("norm2.weight", False),
    "norm2.beta": ("norm2.bias", False),
}


def layer_to_torch(ours: TransformerEncoderLayer, theirs) -> None:
    """Copy our encoder layer into a ``torch.nn.TransformerEncoderLayer``."""
    mha_to_torch(ours.self_attn, theirs.self_attn)
    copy_by_names(ours, theirs, LAYER_NAMES)


def copy_by_names(ours, theirs, names: dict[str, tuple[str, bool]]) -> None:
    """Copy each of our parameters named in ``names`` into its PyTorch twin (transposed if marked).

    Names absent from ``ours`` are skipped (a model without a final norm, say).
    """
    import torch

    params = dict(ours.named_parameters())
    torch_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, (torch_name, transposed) in names.items():
            if name in params:
                data = params[name].data.T if transposed else params[name].data
                torch_params[torch_name].copy_(torch.from_numpy(data.copy()))


def assert_grads_by_names(ours, theirs, names: dict[str, tuple[str, bool]], prefix: str = "") -> None:
    """Each of our parameter gradients named in ``names`` equals PyTorch's within 1e-10."""
    params = dict(ours.named_parameters())
    torch_params = dict(theirs.named_parameters())
    for name, (torch_name, transposed) in names.items():
        if name in params:
            g = torch_params[torch_name].grad.numpy()
            np.testing.assert_allclose(
                params[name].grad, g.T if transposed else g, rtol=0, atol=1e-10, err_msg=prefix + name
            )


def assert_layer_grads_match(ours: TransformerEncoderLayer, theirs, prefix: str = "") -> None:
    params = dict(ours.named_parameters())
    assert_grads_by_names(ours, theirs, LAYER_NAMES, prefix)
    for name, g in mha_grads_from_torch(theirs.self_attn).items():
        np.testing.assert_allclose(
            params["self_attn." + name].grad, g, rtol=0, atol=1e-10, err_msg=prefix + "self_attn." + name
        )
