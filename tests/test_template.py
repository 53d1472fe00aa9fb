"""The service template (templates/service): generate, test, lint, render the chart, build and run.

Projects are generated with cookiecutter's Python API (``no_input``) as a user would with the
``cookiecutter`` command; the generated project's own tests run in a subprocess; its
``chart-values.yaml`` goes through the chart's schema and render checks of tests/test_chart.py;
the container tier builds its image FROM the locally built base image and serves a request
from the loopback stack.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from test_chart import CHART, NAMESPACE, rendered_from, validate_document

from conftest import REPO, Amqp, Stack, put_object, read_object
from slingshot_runtime.cli import main as cli
from slingshot_runtime.cli.new import split_image
from slingshot_runtime.pipeline import HEADER_SOURCE

TEMPLATE = REPO / "templates" / "service"
FILES = {
    ".dockerignore", "Dockerfile", "Makefile", "README.md", "chart-values.yaml", "handler.py", "requirements.txt",
    "tests/test_handler.py",
}  # fmt: skip
DNS_RULE = "DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"


@pytest.fixture(autouse=True)
def cookiecutter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep cookiecutter's replay files and any user config (~/.cookiecutterrc) out of the tests."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(yaml.safe_dump({"replay_dir": str(tmp_path / "replay"), "cookiecutters_dir": str(tmp_path / "cache")}))
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))


def generate(output_dir: Path, **context: str) -> Path:
    return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=context, output_dir=str(output_dir)))


def run_generated_tests(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # No third-party pytest plugins: the generated project's tests must not depend on them (and
    # cloudcoil's plugin, installed here for the chart tests, does not even import outside this repo).
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False)


def files_of(project: Path) -> set[str]:
    return {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


# --------------------------------------------------------------------------- generate


def test_defaults_generate_a_project_whose_tests_pass(tmp_path: Path) -> None:
    project = generate(tmp_path)
    assert project == tmp_path / "my-service"
    assert files_of(project) == FILES
    proc = run_generated_tests(project, "make", "test", f"PYTHON={sys.executable}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    assert (project / "Dockerfile").read_text().splitlines()[1] == "ARG BASE_IMAGE=ghcr.io/slingshot/slingshot-runtime:0.1.0"
    requirements = (project / "requirements.txt").read_text()
    assert requirements.endswith("\n") and [line for line in requirements.splitlines() if not line.startswith("#")] == []


def test_overrides_reach_every_file(tmp_path: Path) -> None:
    project = generate(
        tmp_path,
        service_name="ocr-pages",
        description="Reads scanned pages, writes their text",
        config_host="http://127.0.0.1:8080",
        base_image="localhost/slingshot-runtime",
        base_image_tag="dev",
        image_repository="registry.example.com:5000/team/ocr-pages",
        extra_requirements="requests >= 2.31, numpy>=1.26, <2 rich[jupyter,markdown],tomli-w",
    )
    assert project.name == "ocr-pages" and files_of(project) == FILES
    requirements = [line for line in (project / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements == ["requests>=2.31", "numpy>=1.26,<2", "rich[jupyter,markdown]", "tomli-w"]
    dockerfile = (project / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=localhost/slingshot-runtime:dev\n" in dockerfile
    assert 'org.opencontainers.image.description="Reads scanned pages, writes their text"' in dockerfile
    values = yaml.safe_load((project / "chart-values.yaml").read_text())
    assert values["service"] == {
        "name": "ocr-pages", "configHost": "http://127.0.0.1:8080", "handler": "/app/handler.py", "drainTimeout": 25,
    }  # fmt: skip
    assert values["image"]["repository"] == "registry.example.com:5000/team/ocr-pages"
    assert values["gpg"] == {"existingSecret": "ocr-pages-gpg"}
    makefile = (project / "Makefile").read_text()
    assert "SERVICE := ocr-pages\n" in makefile and "IMAGE ?= registry.example.com:5000/team/ocr-pages\n" in makefile
    assert (project / "handler.py").read_text().startswith('"""ocr-pages: Reads scanned pages, writes their text\n')
    proc = run_generated_tests(project, sys.executable, "-m", "pytest", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_63_character_name_is_a_valid_label(tmp_path: Path) -> None:
    name = "a" + "-b" * 30 + "cd"
    assert len(name) == 63
    assert generate(tmp_path, service_name=name).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Bad_Name", "contains 'B', 'N', '_'"),
        ("-x", "starts or ends with '-'"),
        ("x-", "starts or ends with '-'"),
        ("a" * 64, "is 64 characters long"),
        ("svc.v2", "contains '.'"),
        ('a"b', "contains '\"'"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, reason: str) -> None:
    with pytest.raises(FailedHookException):
        generate(tmp_path / "out", service_name=name, image_repository="registry.example.com/x")
    err = capfd.readouterr().err
    assert f"error: service_name {name!r} {reason}: it must be a {DNS_RULE}" in err
    assert not any((tmp_path / "out").iterdir()), "a refused project must leave nothing behind"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("description", "two\nlines", "description 'two\\nlines' must be one line"),
        ("description", 'say "hi"', "description 'say \"hi\"' must be one line of printable text without '\"'"),
        ("config_host", "sys map", "config_host 'sys map' must be a host name or URL without spaces"),
        ("base_image", "Registry/Runtime", "base_image 'Registry/Runtime' is not an image repository"),
        ("image_repository", "registry.example.com/x y", "image_repository 'registry.example.com/x y' is not an image repository"),
        ("base_image_tag", "-dev", "base_image_tag '-dev' is not an image tag"),
        ("extra_requirements", "ok --index-url=http://evil.invalid", "extra requirement '--index-url=http://evil.invalid' is not"),
        ("extra_requirements", "numpy;python_version<'3.12'", "extra requirement \"numpy;python_version<'3.12'\" is not"),
    ],
)
def test_other_bad_answers_are_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str], key: str, value: str, message: str) -> None:
    with pytest.raises(FailedHookException):
        generate(tmp_path, **{key: value})
    err = capfd.readouterr().err
    assert f"error: {message}" in err
    assert len(err.strip().splitlines()) == 1, err


def test_generated_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    project = generate(tmp_path, extra_requirements="tomli-w")
    proc = subprocess.run(["hadolint", "Dockerfile"], cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- Makefile


def fake_tools(directory: Path, *names: str) -> dict[str, str]:
    """An environment whose PATH holds only do-nothing stand-ins for NAMES."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        tool = directory / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return dict(os.environ, PATH=str(directory))


def make(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    make_bin = shutil.which("make")
    assert make_bin is not None, "make is not installed"
    # Under `make test` the parent make's variables would make this one print "Entering directory".
    base = {k: v for k, v in (env or os.environ).items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run([make_bin, *args], cwd=project, env=base, capture_output=True, text=True, timeout=60, check=False)


def one_line(commands: str) -> str:
    """``make -n`` output with continuation lines joined and runs of spaces collapsed."""
    return " ".join(commands.replace("\\\n", " ").split())


@pytest.mark.parametrize(
    ("tools", "command"),
    [(("buildah", "podman", "docker"), "buildah bud --layers"), (("podman", "docker"), "podman build"), (("docker",), "docker build")],
)
def test_build_uses_the_first_container_tool_found(tmp_path: Path, tools: tuple[str, ...], command: str) -> None:
    project = generate(tmp_path / "gen", base_image="localhost/slingshot-runtime", base_image_tag="dev")
    proc = make(project, "-n", "build", "TAG=1.2.3", env=fake_tools(tmp_path / "bin", *tools))
    assert proc.returncode == 0, proc.stderr
    expected = f"{command} --build-arg BASE_IMAGE=localhost/slingshot-runtime:dev -t registry.example.com/my-service:1.2.3 ."
    assert expected in one_line(proc.stdout)


def test_build_without_a_container_tool_says_so(tmp_path: Path) -> None:
    project = generate(tmp_path / "gen")
    proc = make(project, "build", env=fake_tools(tmp_path / "bin"))
    assert proc.returncode != 0
    assert "make build: no buildah, podman or docker on PATH (or set CONTAINER_TOOL)" in proc.stderr


def test_deploy_runs_helm_upgrade_install_with_the_chart_variable(tmp_path: Path) -> None:
    project = generate(tmp_path, service_name="ocr-pages")
    proc = make(project, "-n", "deploy", f"CHART={CHART}", "NAMESPACE=team", "TAG=2.0.0")
    assert proc.returncode == 0, proc.stderr
    assert one_line(proc.stdout) == (
        f"helm upgrade --install ocr-pages {CHART} --namespace team -f chart-values.yaml "
        "--set-string image.repository=registry.example.com/ocr-pages --set-string image.tag=2.0.0"
    )


# --------------------------------------------------------------------------- chart values


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def chart_values(project: Path, **changes: Any) -> dict[str, Any]:
    values = yaml.safe_load((project / "chart-values.yaml").read_text())
    assert isinstance(values, dict)
    for section, fields in changes.items():
        values[section].update(fields)
    return values


@pytest.mark.parametrize("keda", [False, True], ids=["deployment", "keda"])
def test_chart_values_validate_and_render(tmp_path: Path, chart: helm_python.Chart, keda: bool) -> None:
    project = generate(tmp_path, service_name="ocr-pages", config_host="http://sys-map.team.svc:8080")
    # With KEDA: the three settings the file's comment names, filled in as a user would.
    keda_values = {"enabled": True, "queueName": "ocr-pages-in", "connection": {"existingSecret": "rabbitmq-management"}}
    changes = {"keda": keda_values} if keda else {}
    values = chart_values(project, **changes)
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(chart.merge_values(values), schema)
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], f"helm lint --strict: {problems} {report['errors']}"
    out = rendered_from(chart.render(values, name="ocr-pages", namespace=NAMESPACE))
    for doc in out.docs:
        validate_document(doc)
    (deployment,) = out.of_kind("Deployment")
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["SLINGSHOT_SERVICE"] == "ocr-pages" and env["SLINGSHOT_CONFIG_HOST"] == "http://sys-map.team.svc:8080"
    assert env["SLINGSHOT_HANDLER"] == "/app/handler.py"
    assert worker["image"] == "registry.example.com/ocr-pages:0.1.0"
    secrets = {v["name"]: v.get("secret", {}).get("secretName") for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert {"ocr-pages-gpg", "ocr-pages-password-store"} <= set(secrets.values())
    assert len(out.of_kind("ScaledObject")) == (1 if keda else 0)


# --------------------------------------------------------------------------- slingshot new


def test_slingshot_new_generates_with_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["new", "ocr-pages", "--output-dir", str(tmp_path), "--base-image", "localhost:5000/slingshot-runtime:dev",
         "--config-host", "http://127.0.0.1:8080", "--requirements", "tomli-w, rich"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    project = tmp_path / "ocr-pages"
    assert f"created {os.path.relpath(project)}" in result.output
    assert "ARG BASE_IMAGE=localhost:5000/slingshot-runtime:dev\n" in (project / "Dockerfile").read_text()
    assert (project / "requirements.txt").read_text().endswith("\ntomli-w\nrich\n")
    assert yaml.safe_load((project / "chart-values.yaml").read_text())["service"]["configHost"] == "http://127.0.0.1:8080"

    again = CliRunner().invoke(cli, ["new", "ocr-pages", "--output-dir", str(tmp_path)])
    assert again.exit_code == 2
    assert f"error: {tmp_path / 'ocr-pages'} already exists" in again.output


def test_slingshot_new_refuses_a_bad_name(tmp_path: Path) -> None:
    # A real process: the hook's message reaches the terminal, not click's captured output.
    proc = subprocess.run(
        [sys.executable, "-c", "from slingshot_runtime.cli import main; main()", "new", "Bad_Name", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"error: service_name 'Bad_Name' contains 'B', 'N', '_': it must be a {DNS_RULE}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "Bad_Name").exists()


def test_slingshot_new_names_a_missing_template(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["new", "x", "--template", str(tmp_path / "nowhere"), "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: cannot generate from template '{tmp_path / 'nowhere'}'" in result.output


def test_slingshot_new_from_a_wheel_outside_any_checkout(tmp_path: Path) -> None:
    """`pip install slingshot-runtime` then `slingshot new`: the template ships in the wheel, every
    file of it (a file the package-data globs miss fails here), and no bytecode reaches the project."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("slingshot_runtime-*.whl"))
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "templates/service"], capture_output=True, text=True, check=True)
    expected = {"slingshot_runtime/service_template/" + name.removeprefix("templates/service/") for name in tracked.stdout.split()}
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("slingshot_runtime/service_template/")}
    assert shipped == expected
    # Dependencies come from this interpreter's site-packages; slingshot itself only from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([str(venv / "bin" / "slingshot"), "new", "pdf-pages"], cwd=elsewhere, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    which = subprocess.run([str(venv / "bin" / "python"), "-c", "import slingshot_runtime; print(slingshot_runtime.__file__)"],
                           capture_output=True, text=True, check=True, cwd=elsewhere)  # fmt: skip
    assert which.stdout.startswith(str(venv))
    project = elsewhere / "pdf-pages"
    assert files_of(project) == FILES
    assert not list(project.rglob("__pycache__"))
    assert "pdf-pages" in (project / "chart-values.yaml").read_text()


def test_split_image() -> None:
    assert split_image("localhost/slingshot-runtime:dev") == ("localhost/slingshot-runtime", "dev")
    assert split_image("localhost:5000/slingshot-runtime") == ("localhost:5000/slingshot-runtime", None)
    assert split_image("localhost:5000/x/runtime:1.2") == ("localhost:5000/x/runtime", "1.2")
    assert split_image("runtime") == ("runtime", None)


# --------------------------------------------------------------------------- container tier


def container_script() -> ModuleType:
    """scripts/container.py, the build helper of the base image (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("slingshot_container_script", REPO / "scripts" / "container.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def readable_copy(source: Path, target: Path) -> Path:
    """A copy the container's uid 10001 can read (the originals are the host user's, mode 0600/0700)."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.mark.container
def test_generated_image_serves_a_request(stack: Stack, amqp: Amqp, tmp_path: Path) -> None:
    container = container_script()
    engine = container.Engine()
    container.build_image(engine)  # the base image; cached layers when nothing changed
    service = stack.add_service(name=f"tpl-{uuid.uuid4().hex[:8]}")
    base, tag = split_image(container.IMAGE)
    assert tag is not None
    project = generate(tmp_path / "gen", service_name=service.name, base_image=base, base_image_tag=tag, extra_requirements="tomli-w")
    image = f"localhost/{service.name}:test"
    container.build_image(engine, tag=image, context=project)
    name = f"slingshot-{service.name}"
    keys = tmp_path / "keys"
    keys.mkdir()
    stack.passwords.export_private_key(keys / "service.asc")
    (keys / "service.asc").chmod(0o644)
    store = readable_copy(stack.passwords.store_dir, tmp_path / "store")
    try:
        # The extra requirement made it in, beside the runtime's own packages.
        check = engine.podman("run", "--rm", *engine.run_args(), "--entrypoint", "python", image, "-c", "import tomli_w, boto3")
        assert check.returncode == 0
        engine.podman(
            "run", "-d", "--name", name, *engine.run_args(),
            "-e", f"SLINGSHOT_SERVICE={service.name}", "-e", f"SLINGSHOT_CONFIG_HOST={stack.config.url}",
            "-e", "SLINGSHOT_HEALTH_PORT=0",
            "-v", f"{keys}:/run/secrets/slingshot/gpg:ro", "-v", f"{store}:/run/secrets/slingshot/password-store:ro",
            image,
        )  # fmt: skip
        try:
            amqp.wait_consumer(service.inbound, timeout=60)
        except AssertionError as exc:
            logs = engine.podman("logs", name, check=False)
            raise AssertionError(f"{exc}; container output:\n{logs.stdout}{logs.stderr}") from None
        put_object(stack, service.buckets["in"], 42, b"hello from the template")
        amqp.send(service.inbound, 42)
        body, properties = amqp.get(service.out_queues[0], timeout=60)
        assert body == b"42"
        assert properties.headers[HEADER_SOURCE] == service.name
        assert read_object(stack, service.buckets["out"], 42) == b"HELLO FROM THE TEMPLATE"
        engine.podman("stop", "-t", "30", name, timeout=60)
        state = engine.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "0", f"the worker did not drain cleanly (exit {state}): {engine.podman('logs', name, check=False).stderr}"
    finally:
        engine.podman("rm", "-f", name, check=False)
        engine.podman("rmi", image, check=False)
