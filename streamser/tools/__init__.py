"""Checkpoint tooling: serialization modes (:mod:`.serial`, lists in :mod:`.serial_fields`),
class casts (:mod:`.cast`, cudnn modules as nn in :mod:`.modules`), export to ``.npz`` and
``.safetensors`` (:mod:`.export`) and reading every storage once (:mod:`.verify`)."""
