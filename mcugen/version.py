"""The package version: a leaf, so any layer can stamp it on what it writes."""
__version__ = "0.1.0"
