"""Transports: one module per kind of place images are read from and written to."""
