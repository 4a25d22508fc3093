"""The engine: no Qt anywhere in this package."""
