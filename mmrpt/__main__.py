import gc
import os
import sys

if "PYTHONHASHSEED" not in os.environ:
    # Set iteration order fixed across runs: outputs are versioned by hash (dvc.lock), and
    # some are written in a set's order (TRL's model-card tags in every checkpoint folder).
    # Restart the interpreter once with it; the user's own value is kept.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

from mmrpt.progress import quiet_third_party  # noqa: E402

quiet_third_party()  # before any library that draws progress bars is imported

from mmrpt.cli import main  # noqa: E402

code = main()
# The stage's work is done and written; skip the interpreter's final garbage collection over
# torch/transformers/mlflow's millions of objects (~1.5 s per stage process, docs/PERF.md).
# atexit handlers (logging, MLflow) and weakref finalizers still run; __del__ of objects in
# reference cycles does not (nothing of ours relies on one).
gc.freeze()
sys.exit(code)
