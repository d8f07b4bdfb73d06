"""Benchmarks of streamser against its peers and the physical limits: ``python -m bench``.

Modules, one job each:

* ``cli`` - options, the run over sizes, the verdict and exit code;
* ``data`` - the generated checkpoint and records, and their checksums;
* ``peers`` - the contenders: streamser, torch, safetensors, numpy, pickle, torchfile, and the
  physical limits (tofile, fromfile, np.memmap, copyfile);
* ``cases`` - the cases and the plan of steps (who saves and loads what, in which order);
* ``case`` - one measurement, in a fresh child process (``python -m bench.case``);
* ``measure`` - the parent's side: start the child, sample its memory every 5 ms;
* ``procmem`` - reading a process's RSS and anonymous memory;
* ``report`` - ratios, the memory budget, the table and the JSON file;
* ``chart`` - time and memory against size as a PNG;
* ``units`` - parsing and printing sizes, durations, rates.
"""
