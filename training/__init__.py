"""harkd: training."""
