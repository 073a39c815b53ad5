"""The ``vogflow`` command: one module per command."""
