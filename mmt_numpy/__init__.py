"""mmt_numpy: the multimodal Transformer of the article, in plain NumPy.

``mmt_numpy.ops`` holds pure forward/backward functions (like ``torch.nn.functional``),
``mmt_numpy.nn`` the modules that own parameters (like ``torch.nn``), and
``mmt_numpy.gradcheck`` the finite-difference checker that proves every backward.
"""

__version__ = "0.1.0"
