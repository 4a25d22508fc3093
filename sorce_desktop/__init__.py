"""sorce-desktop: find photos by describing something small in them."""

__version__ = "0.1.0"
APP_NAME = "sorce-desktop"
