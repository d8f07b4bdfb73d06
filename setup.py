"""Build of the optional compiled loops (``streamser._fastread``, ``_fastwrite``, ``_fastascii``).

Everything else is in pyproject.toml. The extensions are optional: where they cannot be
compiled the package still installs and runs its pure-Python reader and writer, which stay the
reference the compiled loops are tested against.
"""

import numpy
from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def _extension(name: str) -> Extension:
    return Extension(
        f"streamser.{name}",
        [f"streamser/{name}.c"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=_FLAGS,
        optional=True,
    )


setup(ext_modules=[_extension("_fastread"), _extension("_fastwrite"), _extension("_fastascii")])
