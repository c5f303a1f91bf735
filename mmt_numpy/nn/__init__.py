"""Modules that own parameters and call the ops (the ``torch.nn`` of mmt_numpy)."""

from mmt_numpy.nn.module import Module, Parameter

__all__ = ["Module", "Parameter"]
