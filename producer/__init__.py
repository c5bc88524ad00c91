"""The producer: decomposers, admission and submit, the CLI and the fleet launcher."""
