"""The ``fedbone`` command and its subcommands."""
