"""Argument parsers and handlers of the ``fedbone`` subcommands for deployment.

Kept apart from the library packages so that building the parser imports
nothing heavy (``fedbone --help`` answers at once); each handler imports what
it needs when it runs.
"""
