"""Benchmarks of streamser against its peers and the physical limits: ``python -m bench``.

Modules, one job each (bench/README.md describes the method):

* ``cli`` - options, the run over sizes and cases, the verdict and exit code;
* ``data`` - the generated checkpoint, records and ascii tensors, and their checksums;
* ``peers`` - the contenders: streamser, torch, safetensors, numpy, pickle, torchfile, the
  physical limits (tofile, fromfile, np.memmap, copyfile), memcpy and zstandard;
* ``cases`` - the cases, their references, and the plan of phases (who saves and reads what);
* ``measure`` - the parent's alternation: repetitions, batches, redone runs, memory per run;
* ``session`` - the parent's handle on a worker process, sampling its memory every 5 ms;
* ``worker`` - one case in a child process (``python -m bench.worker``): preparation, timing;
* ``keeper`` - the parent's mappings of the files a phase reads, touched before each run;
* ``warm`` - touching buffers, the scratch region, ``malloc_trim``;
* ``sched`` - how long a process waited for a CPU;
* ``procmem`` - reading a process's RSS and anonymous memory;
* ``imports`` - whole-interpreter import timings;
* ``stats`` - best-of-n, paired medians, spread;
* ``report`` - summaries, ratios, the memory budget, the table and the JSON file;
* ``spread`` - ``python -m bench.spread``: how far the ratios of several runs are apart;
* ``chart`` - time and memory against size as a PNG;
* ``units`` - parsing and printing sizes, durations, rates;
* ``zstd`` - ``python -m bench.zstd``: compression levels, threads and lazy compressed reads.
"""
