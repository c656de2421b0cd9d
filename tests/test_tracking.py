import json
import socket
from pathlib import Path

import mlflow

from mmrpt.cli import main


def test_unreachable_mlflow_server_falls_back_to_local_store(tiny_project: Path, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["data", "-S", f"tracking.tracking_uri=http://127.0.0.1:{port}"]) == 0
    assert "unreachable" in caplog.text
    assert json.loads((tiny_project / "metrics/data.json").read_text())["train/n_records"] == 64
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlruns/mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.run_name for r in runs] == ["data"]
