"""Which configs to try and how to time them: space, pruning, compile, bench, staged search."""
