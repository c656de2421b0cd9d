import gc
import sys

from mmrpt.cli import main

code = main()
# The stage's work is done and written; skip the interpreter's final garbage collection over
# torch/transformers/mlflow's millions of objects (~1.5 s per stage process, docs/PERF.md).
# Finalisers and atexit handlers still run.
gc.freeze()
sys.exit(code)
