"""The object graph: reading and writing values as records (tags, indices, back-references),
the writer's identity memo, walks over loaded values, and the entry point that detects a
buffer's format and reads one value from it."""
