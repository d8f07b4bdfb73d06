"""Python shapes of Lua and Torch values: tables, torch objects, storages, functions
(:mod:`.lua`), tensors as numpy views (:mod:`.tensors`), and lazily read storages (:mod:`.lazy`)."""
