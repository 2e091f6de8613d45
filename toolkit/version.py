"""The toolkit's version, in one place: `toolkit.__version__`, cmba.json's provenance and the package metadata
(pyproject.toml reads it from here) all take it from this leaf module."""

__version__ = "0.3.0"
