"""harkd benchmarks."""
