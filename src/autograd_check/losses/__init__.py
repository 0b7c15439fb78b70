"""Losses: the built-in ones (the one list of names) and users' own (--target)."""
