"""The Kubernetes deployment as its worker would submit it: prefect-kubernetes renders the job
manifest from deploy/k8s-gpu-job-template.json and the k8s-gpu deployment's job variables
(KubernetesWorkerJobConfiguration, the worker's own code path), and the result is checked: the
image, the GPUs, the persistent volume, the environment, the command. Also: no deployment in
prefect.yaml stores a path of the machine that deploys it."""

import asyncio
import json
import re
from pathlib import Path
from uuid import uuid4

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("prefect_kubernetes", reason="the k8s extra: pip install -e '.[k8s]'")


def deployments() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d | {"pull": d.get("pull", doc["pull"])} for d in doc["deployments"]}


def rendered_job(values: dict) -> dict:
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((ROOT / "deploy/k8s-gpu-job-template.json").read_text())
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, values)
    )
    config.prepare_for_flow_run(FlowRun(id=uuid4(), flow_id=uuid4(), name="quiet-run"))
    return config.job_manifest


def test_the_k8s_gpu_job_manifest():
    deployment = deployments()["k8s-gpu"]
    values = {**deployment["work_pool"]["job_variables"], "image": "registry.example/mmrpt:1"}
    job = rendered_job(values)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/mmrpt:1"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    gpus = deployment["work_pool"]["job_variables"]["gpus"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus == 8
    # one process per GPU: the deployment's num_processes is launch.num_processes
    assert deployment["parameters"]["num_processes"] == gpus
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": "mmrpt-workspace"}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"workspace": "/workspace", "shm": "/dev/shm"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MMRPT_TRACKING_URI"] == "http://mlflow:5000"  # the tracking server
    for key in ("MMRPT_HOME", "HF_HOME", "TORCH_EXTENSIONS_DIR"):  # on the volume
        assert env[key].startswith("/workspace/"), key
    assert env["MMRPT_IMAGE_CHECKOUT"] == "/opt/mmrpt"
    assert "PREFECT__FLOW_RUN_ID" in env  # Prefect's own variables are still passed
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    # and it is a Job by the Kubernetes API's own models (field names and types)
    from kubernetes_asyncio.client import ApiClient, V1Job

    async def as_v1_job():
        async with ApiClient() as api:
            return api._ApiClient__deserialize(job, "V1Job")

    v1 = asyncio.run(as_v1_job())
    assert isinstance(v1, V1Job)
    assert v1.spec.template.spec.volumes[0].persistent_volume_claim.claim_name == "mmrpt-workspace"


def test_job_variables_reach_the_manifest():
    job = rendered_job(
        {
            "image": "img",
            "gpus": 2,
            "volume_claim": "other-claim",
            "mlflow_tracking_uri": "http://mlflow.ml:80",
            "env": {"EXTRA": "1"},
        }
    )
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MMRPT_TRACKING_URI"] == "http://mlflow.ml:80" and env["EXTRA"] == "1"
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "other-claim"


def test_no_deployment_bakes_in_a_path_of_the_deploying_machine():
    """{{ $VAR }} placeholders resolve when `prefect deploy` runs: none in the pull steps,
    which find the checkout from the worker's (or pod's) environment when a run starts."""
    for name, d in deployments().items():
        steps = json.dumps(d["pull"])
        assert not re.search(r"\{\{\s*\$", steps), name
        assert "$MMRPT_HOME" in steps and "{{ checkout.stdout }}" in steps, name
    assert deployments()["gpu"]["parameters"]["params_file"]
