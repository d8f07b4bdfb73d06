"""The format itself: constants and classes as data (:mod:`.format`), how records are laid
out (:mod:`.grammar`), how inputs are told apart (:mod:`.detect`) and the bounds of a read
(:mod:`.limits`). Everything else takes its knowledge of the bytes from here."""
