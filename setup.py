"""Build script. Package metadata lives in pyproject.toml.

The C++/CUDA extension diffcore._C (csrc/) is not written yet; until it is, this
builds a pure-Python package and every op runs on the reference (torch) backend.
"""
from setuptools import setup

setup()
