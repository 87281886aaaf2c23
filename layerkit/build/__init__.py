"""Build: turn a Dockerfile and a context into an image."""
