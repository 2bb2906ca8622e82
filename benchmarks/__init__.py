"""GPU benchmark scripts (run from the repository root as python3 -m benchmarks.NAME); see BENCHMARKS.md."""
