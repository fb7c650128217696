"""The Jupyter server host: an ExtensionApp, its routes, and the per-notebook rooms."""
