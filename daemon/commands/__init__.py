"""Sub-commands of the harkd command line."""
