"""The Dockerfile calls only scripts and programs that exist, and its context keeps what the build needs.

No Docker engine runs here, so these checks stand in for `docker build`: each path the image's RUN, ENTRYPOINT,
CMD and HEALTHCHECK lines use is traced to a file in this repository or to a program the build script installs
(the same packages are in this venv, so their executables are beside this interpreter).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.dockerfile_instructions import (
    Instruction,
    healthcheck_command,
    ignore_patterns,
    is_ignored,
    read_instructions,
)
from tests.deploy.k8s_objects import REPO

DOCKERFILE = REPO / "Dockerfile"
BUILD_SCRIPT = REPO / "deploy" / "scripts" / "build.sh"
PREFIX = "/opt/vitserve"  # where build.sh puts the environment in the image


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return read_instructions(DOCKERFILE)


def of(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def image_path_source(path: str) -> Path:
    """The file in this checkout that an absolute path inside the image comes from."""
    if path.startswith(f"{PREFIX}/scripts/"):
        name = path.removeprefix(f"{PREFIX}/scripts/")
        # build.sh installs the deploy scripts it names into PREFIX/scripts.
        assert f"$src/deploy/scripts/{name}" in BUILD_SCRIPT.read_text(), f"build.sh does not install {name}"
        return REPO / "deploy" / "scripts" / name
    if path.startswith(f"{PREFIX}/bin/"):
        return Path(sys.executable).parent / path.removeprefix(f"{PREFIX}/bin/")
    raise AssertionError(f"{path}: not something the build puts in the image")


def test_two_stages_from_the_base_image_argument(instructions: list[Instruction]) -> None:
    args = {i.args.split("=")[0]: i.args.partition("=")[2] for i in of(instructions, "ARG")}
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    froms = [i.args.split() for i in of(instructions, "FROM")]
    assert [f[0] for f in froms] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert [f[-1] for f in froms] == ["build", "runtime"]
    copies = [i.args for i in of(instructions, "COPY") if i.args.startswith("--from=")]
    assert copies == [f"--from=build {PREFIX} {PREFIX}"], "only the built environment crosses to the runtime"


def test_run_lines_call_the_build_script_that_exists(instructions: list[Instruction]) -> None:
    runs = [i.args for i in of(instructions, "RUN")]
    scripts = [m for run in runs for m in re.findall(r"\bbash (\S+\.sh)", run)]
    assert scripts == ["deploy/scripts/build.sh"]
    assert (REPO / scripts[0]).is_file()
    build_run = next(run for run in runs if "build.sh" in run)
    assert build_run.split("build.sh", 1)[1].split()[0] == PREFIX


def test_entrypoint_and_cmd_name_installed_programs(instructions: list[Instruction]) -> None:
    (entrypoint,) = of(instructions, "ENTRYPOINT")
    (cmd,) = of(instructions, "CMD")
    words = entrypoint.exec_form() + cmd.exec_form()
    assert words[0] == f"{PREFIX}/bin/dumb-init"
    assert "--single-child" in words, "SIGTERM must reach the server alone, not its worker processes"
    paths = [w for w in words if w.startswith("/")]
    assert f"{PREFIX}/scripts/start.sh" in paths
    for path in paths:
        source = image_path_source(path)
        assert source.is_file(), f"{path} ← {source}: missing"


def test_healthcheck_uses_python_only(instructions: list[Instruction]) -> None:
    (check,) = of(instructions, "HEALTHCHECK")
    command = healthcheck_command(check)
    assert command[:2] == ["python", "-c"], "no curl in the image"
    assert "/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")  # it is valid Python
    assert (Path(sys.executable).parent / "python").exists()


def test_runs_as_a_non_root_user_with_the_store_as_a_volume(instructions: list[Instruction]) -> None:
    users = of(instructions, "USER")
    assert users and users[-1].args not in {"root", "0"}
    env = dict(w.split("=", 1) for i in of(instructions, "ENV") for w in i.exec_form())
    (volume,) = of(instructions, "VOLUME")
    assert volume.exec_form() == [env["VITSERVE_STORE_ROOT"]]
    assert [i.args for i in of(instructions, "EXPOSE")] == [env["VITSERVE_PORT"]]
    assert env["PATH"].startswith(f"{PREFIX}/bin:")


def test_dockerignore_keeps_what_the_build_installs() -> None:
    patterns = ignore_patterns(REPO / ".dockerignore")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    root = setuptools["package-dir"]["vitserve"]  # the root package's folder; its subpackages are folders in it
    folders = [name.removeprefix("vitserve").lstrip(".").replace(".", "/") for name in setuptools["packages"]]
    packages = [str(Path(root) / folder / "__init__.py") for folder in folders]
    needed = ["pyproject.toml", project["project"]["readme"], "__main__.py", "py.typed", *packages]
    needed += [str(p.relative_to(REPO)) for p in (REPO / "deploy" / "scripts").glob("*.sh")]
    kept_out = [path for path in needed if is_ignored(path, patterns)]
    assert not kept_out, f".dockerignore leaves out {kept_out}"
    for heavy in (".venv", ".git", "store", "tests", "vit/__pycache__"):
        assert is_ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"
