"""Build the container images the container tests and the cold-start benchmark use.

No Docker engine and no registry here: buildah and podman from Debian, with their own
storage and configuration in a work directory (default ``/var/tmp/slingshot-containers``,
or ``SLINGSHOT_CONTAINER_DIR``), so nothing touches the machine's default container store.

1. ``base``: a debootstrapped Debian bookworm minbase, slimmed the way the registry's
   ``debian:bookworm-slim`` is (same dpkg excludes and apt settings), imported as
   ``docker.io/library/debian:bookworm-slim``. Skipped when that image exists (cached per
   machine); ~1 minute when it does not.
2. ``build``: ``buildah bud`` of the top-level Dockerfile (chroot isolation, overlay storage,
   cached layers, pip trusting the host CA through a read-only mount of /etc/ssl/certs).

Usage: ``python3 scripts/container.py [base|build|all|size|env] [--force]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKDIR = Path(os.environ.get("SLINGSHOT_CONTAINER_DIR", "/var/tmp/slingshot-containers"))
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/slingshot-runtime:dev"
SUITE = "bookworm"
HOST_CA_DIR = "/etc/ssl/certs"
HOST_CA_FILE = "ca-certificates.crt"
NPROC = 4096
TOOLS = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "newuidmap": "uidmap"}

# The registry's slim images keep these out of every later apt layer too
# (debuerreotype's /etc/dpkg/dpkg.cfg.d/docker).
DPKG_EXCLUDES = """\
# Like the registry's debian:*-slim: no docs, man pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
"""
APT_CONF = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    # The host's mirror is a frozen snapshot: its Release files are past their Valid-Until.
    "99snapshot": 'Acquire::Check-Valid-Until "false";\n',
}
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/groff", "usr/share/lintian", "usr/share/locale")


class ContainerError(RuntimeError):
    """A container tool is missing or a build step failed; the message says which and why."""


def missing_tools() -> list[str]:
    """Debian packages to install for the container tools that are not on PATH."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ContainerError(
            f"container tools missing: apt-get install -y {' '.join(missing)} (scripts/bootstrap.sh installs them)"
        )


def hard_nofile() -> int:
    """The host's hard limit: a container may not ask for more (runc refuses to start)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1048576 if hard == resource.RLIM_INFINITY else hard


class Engine:
    """buildah and podman pointed at a private store and config in ``workdir``."""

    def __init__(self, workdir: Path = WORKDIR) -> None:
        self.workdir = workdir
        self.tmp = workdir / "tmp"
        for directory in (workdir, self.tmp, workdir / "storage", workdir / "run"):
            directory.mkdir(parents=True, exist_ok=True)
        self.storage_conf = workdir / "storage.conf"
        self.containers_conf = workdir / "containers.conf"
        _write_if_changed(
            self.storage_conf,
            f'[storage]\ndriver = "overlay"\ngraphroot = "{workdir / "storage"}"\nrunroot = "{workdir / "run"}"\n',
        )
        nofile = hard_nofile()
        _write_if_changed(
            self.containers_conf,
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={NPROC}:{NPROC}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'  # crun fails on this machine's hybrid cgroups
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{workdir / "events.log"}"\n'
            f'tmp_dir = "{workdir / "run" / "libpod"}"\n',
        )

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONTAINERS_STORAGE_CONF=str(self.storage_conf),
            CONTAINERS_CONF=str(self.containers_conf),
            TMPDIR=str(self.tmp),
        )
        return env

    def ulimit_args(self) -> list[str]:
        """``--ulimit`` replaces the configured defaults, so both are always given."""
        nofile = hard_nofile()
        return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={NPROC}:{NPROC}"]

    def run_args(self) -> list[str]:
        """``podman run`` options every container of the tests and benchmarks uses."""
        return ["--runtime", "runc", "--network", "host", "--read-only", "--tmpfs", "/tmp", *self.ulimit_args()]

    def tool(
        self,
        name: str,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run buildah or podman with this store; a failure names the command and its error output."""
        argv = [name, *args]
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                input=stdin.decode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            require_tools()
            raise
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{' '.join(argv[:3])} … timed out after {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise ContainerError(f"{' '.join(argv[:3])} … failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.tool("podman", *args, timeout=timeout, check=check)

    def image_exists(self, name: str) -> bool:
        return self.podman("image", "exists", name, check=False).returncode == 0

    def image_size(self, name: str = IMAGE) -> int:
        """Uncompressed size in bytes, as ``podman images`` reports it."""
        return int(self.podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One build at a time per work directory (tests and the benchmark may overlap)."""
        with open(self.workdir / "build.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def host_sources() -> list[Path]:
    """The host's enabled apt source files (``.list`` and deb822 ``.sources``)."""
    found = [Path("/etc/apt/sources.list")] if Path("/etc/apt/sources.list").is_file() else []
    directory = Path("/etc/apt/sources.list.d")
    if directory.is_dir():
        found += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    return [p for p in found if p.read_text().strip()]


def host_mirror() -> str:
    """The first Debian mirror the host's apt uses for the bookworm suite."""
    for path in host_sources():
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
                if uris and suites and SUITE in suites.group(1).split():
                    return uris.group(1)
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    words = [p for p in parts[1:] if not p.startswith("[")]
                    if len(words) >= 2 and words[1] == SUITE:
                        return words[0]
    raise ContainerError(f"no Debian mirror for {SUITE!r} in the host's apt sources (/etc/apt/sources.list[.d])")


def slim_rootfs(rootfs: Path) -> None:
    """Make a debootstrap minbase look like the registry's slim image, with the host's sources."""
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_EXCLUDES)
    for name, text in APT_CONF.items():
        (rootfs / "etc/apt/apt.conf.d" / name).write_text(text)
    for relative in PRUNE:
        directory = rootfs / relative
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*"), reverse=True):
            keep = path.name == "copyright" or path == directory / "locale.alias"
            if keep or (path.is_dir() and not path.is_symlink() and any(path.iterdir())):
                continue
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's one line: the host's files replace it
    for source in host_sources():
        target = rootfs / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "var/log/*.log",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old"):
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def build_base(engine: Engine, force: bool = False) -> bool:
    """Import the stand-in for the registry's debian:bookworm-slim; False when it was cached."""
    require_tools()
    with engine.lock():
        if not force and engine.image_exists(BASE_IMAGE):
            return False
        started = time.monotonic()
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=engine.tmp))
        try:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", SUITE, str(rootfs), host_mirror()],
                capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                raise ContainerError(f"debootstrap failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
            slim_rootfs(rootfs)
            with subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
                imported = subprocess.run(
                    ["podman", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
                    stdin=tar.stdout, env=engine.env, capture_output=True, text=True, timeout=300, check=False,
                )
            if tar.returncode != 0 or imported.returncode != 0:
                raise ContainerError(
                    f"podman import failed (tar {tar.returncode}, import {imported.returncode}): {imported.stderr[-2000:]}"
                )
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        print(f"container: built {BASE_IMAGE} in {time.monotonic() - started:.0f}s", file=sys.stderr)
        return True


def build_image(engine: Engine, tag: str = IMAGE, context: Path = REPO, extra: Sequence[str] = ()) -> None:
    """``buildah bud`` of the Dockerfile; unchanged layers come from the cache."""
    build_base(engine)
    ca = Path(HOST_CA_DIR) / HOST_CA_FILE
    if not ca.is_file():
        raise ContainerError(f"host CA bundle {ca} not found (pip inside the build needs it)")
    with engine.lock():
        engine.tool(
            "buildah", "bud",
            "--isolation", "chroot",
            "--layers",
            "--pull=never",
            *engine.ulimit_args(),
            "-v", f"{HOST_CA_DIR}:/mnt:ro",
            "--build-arg", f"PIP_CERT=/mnt/{HOST_CA_FILE}",
            "--build-arg", f"BASE={BASE_IMAGE}",
            "-f", str(context / "Dockerfile"),
            "-t", tag,
            *extra,
            str(context),
            timeout=900,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/container.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=["base", "build", "all", "size", "env"], nargs="?", default="all")
    parser.add_argument("--force", action="store_true", help="rebuild the base image even if it exists")
    parser.add_argument("--tag", default=IMAGE)
    args = parser.parse_args(argv)
    try:
        engine = Engine()
        if args.command == "env":
            for key in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "TMPDIR"):
                print(f"export {key}={engine.env[key]}")
            return 0
        if args.command in ("base", "all"):
            built = build_base(engine, force=args.force)
            print(f"{BASE_IMAGE}: {'built' if built else 'cached'}")
        if args.command in ("build", "all"):
            started = time.monotonic()
            build_image(engine, args.tag)
            print(f"{args.tag}: built in {time.monotonic() - started:.1f}s")
        if args.command in ("build", "all", "size"):
            size = engine.image_size(args.tag)
            print(json.dumps({"image": args.tag, "bytes": size, "MB": round(size / 1e6, 1)}))
    except ContainerError as exc:
        print(f"container: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
