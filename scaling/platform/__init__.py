"""Platform workarounds, in one layer (the trainer and the models stay free of them).

- ``malloc``: glibc malloc tuned for XLA:CPU, applied by re-executing a CLI once.
- ``restart``: re-run a CLI once after a fresh compile (XLA:CPU runs cached programs faster).
- ``xla_cpu``: per-family XLA:CPU compiler options.
- ``blas``: pin host BLAS threads where a fit would oversubscribe the cores.
- ``entrypoint``: the one wrapper every CLI, console script and experiment script uses.
"""
