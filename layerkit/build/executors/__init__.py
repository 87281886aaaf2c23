"""RUN executors, one module each, loaded by name through :func:`layerkit.build.executor.select_executor`.

- :mod:`.native` — namespaces + overlayfs over per-layer snapshots (root);
- :mod:`.rootless` — ``bwrap`` over a private copy of the rootfs, changes found by tree comparison;
- :mod:`.docker` — a container in the Docker Engine, its committed top layer re-emitted.

Shared pieces: :mod:`.snapshots` (overlay lower dirs keyed by chain ID), :mod:`.overlay_diff` (upper
dir → changes), :mod:`.tree_diff` (the change set and before/after comparison), :mod:`.sandbox`
(namespace/mount helpers; runs as a stdlib-only script).
"""
