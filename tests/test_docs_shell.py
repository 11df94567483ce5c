"""Every shell example of README.md and docs/ runs, as written, with only its paths substituted.

The commands run in document order in one scratch folder, as a reader would type them, through
bash and the installed `cambatch` (and `torchrun`) commands. A new shell line that is neither run
here nor listed in NOT_RUN with its reason fails the test, so the documentation cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import PHOTOS, REPO, SAMPLES
from sources_support import write_datasets_parquet, write_shard

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# Lines that are not commands of this tool, each with the reason it does not run here.
NOT_RUN = {
    "pip install -e .": "the install step: the test runs inside that installation",
    'pip install -e ".[all]"': "the install step: the test runs inside that installation",
    'pip install -e ".[dev]"': "the install step: the test runs inside that installation",
    "pytest": "the test suite itself",
    'pytest -m "not slow"': "the test suite itself",
    "ruff check . && ruff format --check .": ".ci/run runs it before the tests",
    "mkdocs build --strict": ".ci/run runs it before the tests; tests/test_docs_reference.py checks the pages it "
    "generates",
    "cambatch run --from-list xrays.csv --model densenet121 --num-classes 14 --class-names findings.txt --weights "
    "chexnet.pt --activation sigmoid --topk 14 --out cams-xray": "needs a CheXNet checkpoint and its X-rays: "
    "tests/test_runner_pipeline.py runs a multi-label densenet121 with --activation sigmoid",
    "cambatch run s3://bucket/photos --out cams-s3": "needs S3: tests/test_sources_remote.py runs it on moto",
    "cambatch run gs://bucket/shards --out cams-gcs": "needs Google Cloud Storage and gcsfs",
    "cambatch run s3://bucket/photos --out s3://bucket/cams": "needs S3: tests/test_runner_remote_out.py runs it "
    "on moto",
    "cambatch summarize s3://bucket/cams": "needs S3: tests/test_runner_remote_out.py runs it on moto",
    "python -c \"import cambatch; print(cambatch.load_report('s3://bucket/cams', rank=1).head())\"": "needs S3: "
    "tests/test_runner_remote_out.py reads the report on moto the same way",
    "cambatch run /data/images --out s3://audits/cams/$(date +%F) --check policy.toml --baseline "
    "s3://audits/cams/$(date -d yesterday +%F) --quiet": "needs S3: tests/test_checks_run.py runs it on moto "
    "(test_a_baseline_on_a_store_gives_the_same_values_and_the_verdict_is_kept_there)",
    "python -c \"import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from photos import generate; "
    "generate(Path('photos'), 2000)\"": "a benchmark's source photos (2,000 generated JPEGs), for the figures of "
    "docs/performance-inspection.md; tests/test_inspection_gallery.py runs the gallery at 200,000 images",
    "python benchmarks/inspection_scale.py --source SOURCE --images 1000000 --commands summarize gallery compare "
    "--browser": "a benchmark (a million-image report, minutes a command); tests/test_report_scan.py and "
    "tests/test_inspection_*.py test what it times",
    "python benchmarks/evaluate_speed.py --images 400 --maps peaked --report 2000": "a benchmark; "
    "tests/test_evaluation_boxes.py and test_evaluation_protocol.py test the sweep it times",
    "ray job submit --address http://head-node:8265 -- cambatch run /shared/images --out /shared/cams --engine ray "
    "--device cuda --concurrency 8 --quiet": "needs a Ray cluster with GPUs; tests/test_runner_ray_engine.py runs the "
    "same job on a local Ray",
}
# The examples' placeholders for a user's data, and what stands in for them here.
PATHS = {
    "/data/imagenet/val": "imagenet_val",  # one folder per class (ImageFolder layout)
    "/data/images": "photos",
    "/data/cams": "cams_cluster",
    "/data/shards": "shards",  # WebDataset shards of the sample photos
    "/data/train.parquet": "train.parquet",  # the sample photos as a `datasets` Parquet file
}


def shell_lines() -> list[tuple[str, str]]:
    """(document, command) for every command line of every ```bash block, in document order."""
    found = []
    for document in DOCUMENTS:
        for block in re.findall(r"^```bash\n(.*?)^```", document.read_text(encoding="utf-8"), re.S | re.M):
            for line in block.splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()  # trailing comments
                if command and not command.startswith("#"):
                    found.append((document.relative_to(REPO).as_posix(), command))
    return found


def substituted(command: str) -> str:
    for placeholder, stand_in in PATHS.items():
        command = command.replace(placeholder, stand_in)
    return command


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding what the examples name: sample_images, photos, a labelled tree, val.csv,
    and two runs to compare (cams-monday with the default model, cams-tuesday with resnet18)."""
    work = tmp_path_factory.mktemp("docs_shell")
    shutil.copytree(SAMPLES, work / "sample_images")
    shutil.copytree(SAMPLES, work / "photos", ignore=shutil.ignore_patterns("*.md"))
    for name, label in (("chelsea.png", "tabby"), ("coffee.png", "espresso")):
        (work / "imagenet_val" / label).mkdir(parents=True)
        shutil.copy(SAMPLES / name, work / "imagenet_val" / label / name)
    shutil.copy(SAMPLES / "coffee.png", work / "coffee.png")
    write_shard(work / "shards" / "photos-000.tar", PHOTOS[:4])
    write_shard(work / "shards" / "photos-001.tar", PHOTOS[4:])
    write_datasets_parquet(work / "train.parquet", PHOTOS, [0] * len(PHOTOS), ["espresso"])
    (work / "val.csv").write_text("path,label\ncoffee.png,espresso\nphotos/chelsea.png,tabby\n", encoding="utf-8")
    # Ground-truth boxes of two photos for the --annotations / evaluate examples (README, Ground truth).
    (work / "boxes.csv").write_text(
        "path,x0,y0,x1,y1,label\nchelsea.png,60,10,420,299,tabby\ncoffee.png,100,20,500,380,espresso\n",
        encoding="utf-8",
    )
    for out, extra in (("cams-monday", []), ("cams-tuesday", ["--model", "resnet18", "--weights", "none"])):
        prepare = ["cambatch", "run", "photos", "--out", out, "--no-overlays", "--quiet", *extra]
        subprocess.run(prepare, cwd=work, check=True, capture_output=True, timeout=600)
    return work


def test_every_shell_example_runs_as_written(workdir):
    lines = shell_lines()
    assert len(lines) >= 12  # quick start, audit jobs, sharding, lists, inspecting
    unknown = [c for _, c in lines if c not in NOT_RUN and not c.startswith(("cambatch ", "torchrun "))]
    assert not unknown, f"shell lines neither run nor listed in NOT_RUN: {unknown}"
    env = {**os.environ, "COLUMNS": "160"}
    for document, command in lines:
        if command in NOT_RUN:
            continue
        proc = subprocess.run(
            ["bash", "-c", substituted(command)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"{document}: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def test_every_common_task_of_the_readme_runs_on_its_page():
    """README's task table names one command and one page per task: the command is a shell line of that page,
    so it runs (or is listed in NOT_RUN) above, as written."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Common tasks", 1)[1].split("\n## ", 1)[0]
    tasks = re.findall(r"^\| [^|]+ \| `([^`]+)` \| \[[^]]+\]\(docs/([\w./-]+\.md)\) \|$", table, re.M)
    assert len(tasks) >= 10 and len(tasks) == len([line for line in table.splitlines() if line.startswith("| ")]) - 1
    lines = shell_lines()
    for command, page in tasks:
        assert (f"docs/{page}", command) in lines, f"README's task `{command}` is not a shell line of docs/{page}"


def test_the_examples_left_what_they_promise(workdir):
    """Run after the test above (same module, in order): what the commands wrote is there and sound."""
    report = pd.read_parquet(workdir / "cams" / "report")
    assert {"coffee.png", "chelsea.png"} <= set(report["path"]) and (report["status"] == "ok").all()
    assert (workdir / "cams" / "gallery" / "index.html").is_file()
    assert len(pd.read_csv(workdir / "classes.csv")) >= 1
    assert len(pd.read_parquet(workdir / "changes.parquet")) == 7  # the seven photos, in both runs
    evaluated = pd.read_parquet(workdir / "cams-gt" / "report")
    assert evaluated.loc[evaluated["path"] == "chelsea.png", "gt_boxes"].eq(1).all()
    shards, rows = (
        pd.read_parquet(workdir / "cams-shards" / "report"),
        pd.read_parquet(workdir / "cams-parquet" / "report"),
    )
    assert shards["path"].nunique() == rows["path"].nunique() == len(PHOTOS)
    labelled = report[report["label"].notna()]
    assert set(labelled["label"]) >= {"espresso", "tabby"}
    # The cluster examples (a Slurm task, then torchrun with 8 processes on this CPU): one report, every photo once.
    cluster = pd.read_parquet(workdir / "cams_cluster" / "report")
    top1 = cluster[cluster["rank"] == 1]
    assert sorted(top1["path"]) == sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    # docs/check.md: Monday passes the default policy, Tuesday's model fails against it; the verdicts are kept.
    assert json.loads((workdir / "verdict.json").read_text())["verdict"] in ("pass", "warn")
    tuesday = sorted((workdir / "cams-tuesday" / "checks").glob("*.json"))
    assert json.loads(tuesday[-1].read_text())["verdict"] == "fail"
    assert list((workdir / "cams-tonight" / "checks").glob("*.json")) and (workdir / "checks.xml").is_file()
