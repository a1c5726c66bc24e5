"""harkd: rescorer."""
