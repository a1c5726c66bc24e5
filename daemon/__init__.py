"""harkd: daemon."""
