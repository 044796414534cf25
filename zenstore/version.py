"""The package version (a leaf, so modules below the package face can name it)."""

__version__ = "0.1.0"
