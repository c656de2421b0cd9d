import gc
import sys

from mmrpt.progress import quiet_third_party

quiet_third_party()  # before any library that draws progress bars is imported

from mmrpt.cli import main  # noqa: E402

code = main()
# The stage's work is done and written; skip the interpreter's final garbage collection over
# torch/transformers/mlflow's millions of objects (~1.5 s per stage process, docs/PERF.md).
# atexit handlers (logging, MLflow) and weakref finalizers still run; __del__ of objects in
# reference cycles does not (nothing of ours relies on one).
gc.freeze()
sys.exit(code)
