"""The version of the `tet` package (``tet.__version__``)."""

__version__ = "0.1.0"
