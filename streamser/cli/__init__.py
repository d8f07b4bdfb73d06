"""The ``streamser`` command line."""
