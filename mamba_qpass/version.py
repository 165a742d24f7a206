"""The project's version, written once: pyproject.toml reads it, and saved models record it, also when the
package runs from a checkout without being installed."""

__version__ = "0.1.0"
