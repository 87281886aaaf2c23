"""layerkit's benchmark harness: deterministic workloads, layerkit and its peers timed side by side.

Run ``python -m bench --help``. Results go to ``docs/benchmarks.md`` (Markdown) and
``bench/results/latest.json``. Timings are medians of interleaved runs (A B A B …) so drift on a shared
machine hits every tool alike; the figures that matter are the ratios between tools in the same run.
"""
