"""Checkpoint tooling applied while writing: serialization modes (:mod:`.serial`) and class
casts (:mod:`.cast`)."""
