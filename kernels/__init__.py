"""Triton kernels, installed as ``diffcore.kernels``: one file per op, reference beside it.

Empty until the fused kernels land; every op runs on the reference backend meanwhile.
"""
