"""setuptools hook: the only thing pyproject.toml cannot say is `cffi_modules`."""

from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
