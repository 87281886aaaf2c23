"""Operations over images from any source: copy (and, from other modules, mutate, inspect, diff)."""
