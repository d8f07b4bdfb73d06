"""Bytes in and out: mappings and streams to read from (:mod:`.mapping`), the bounded output
sink (:mod:`.sink`), write-behind files and atomic replacement (:mod:`.writeback`,
:mod:`.atomic`), the seekable zstd container and its frames (:mod:`.compression`,
:mod:`.seekable`), and the memory behind arrays (:mod:`.arrays`)."""
