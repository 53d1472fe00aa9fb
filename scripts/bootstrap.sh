#!/usr/bin/env bash
# Prepare this machine for the tests, the demo and the benchmarks; idempotent and fast
# when everything is already there (each step checks before it installs or starts).
#
#   1. Debian packages (apt-get, only the missing ones; `apt-get update` only if needed)
#   2. the project and its dev extras (`pip install -e '.[dev]'`, skipped when satisfied)
#   3. RabbitMQ and PostgreSQL started if installed and not listening (slingshot_runtime.devstack)
#
# Environment: PYTHON (default python3).
set -euo pipefail

# Debian packages the tests need. Later work appends here (containers: buildah podman runc
# debootstrap uidmap). RabbitMQ and PostgreSQL come with this kind of machine.
APT_PACKAGES=(pass gnupg buildah podman runc debootstrap uidmap graphviz)

PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

deb_installed() {
    # No pipe into `grep -q`: with pipefail an early-exiting grep can fail the check.
    local status
    status=$(dpkg -s "$1" 2>/dev/null) || return 1
    [[ $status == *$'\nStatus: install ok installed'* ]]
}

# --------------------------------------------------------------------------- 1. Debian packages
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    [[ $(command -v "$PYTHON") == /usr/bin/* ]] || die "$PYTHON has no pip"
    APT_PACKAGES+=(python3-pip)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    deb_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})) && ! command -v apt-get >/dev/null 2>&1; then
    say "WARNING: not a Debian system (no apt-get); install these yourself: ${missing[*]}"
elif ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    apt_log=$(mktemp /tmp/bootstrap-apt.XXXXXX.log)
    apt_failed() { tail -n 5 "$apt_log" >&2; die "$1 failed (full log: $apt_log)"; }
    apt_get=(env DEBIAN_FRONTEND=noninteractive apt-get -q)  # env: sudo would drop an exported one
    apt_install=("${apt_get[@]}" install -y --no-install-recommends "${missing[@]}")
    if ! as_root "${apt_install[@]}" >"$apt_log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        as_root "${apt_get[@]}" update >>"$apt_log" 2>&1 || apt_failed "apt-get update"
        as_root "${apt_install[@]}" >>"$apt_log" 2>&1 || apt_failed "apt-get install ${missing[*]}"
    fi
    rm -f "$apt_log"
else
    say "Debian packages present: ${APT_PACKAGES[*]}"
fi

# --------------------------------------------------------------------------- 2. Python packages
# Exit 0 when `pip install -e '.[dev]'` would change nothing: every requirement (with the
# requirements of its extras) is installed at an allowed version, and the project itself
# is an editable install of this checkout at the version pyproject.toml names.
python_deps_ok() {
    # From / so that a stale *.egg-info in the checkout cannot stand in for the installed metadata.
    (cd / && "$PYTHON" - "$REPO") <<'PY' 2>/dev/null
import importlib.util
import json
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

repo = Path(sys.argv[1]).resolve()
project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
wanted = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("dev", [])]


def satisfied(req: Requirement, seen: set[str]) -> bool:
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        return False
    if not req.specifier.contains(dist.version, prereleases=True):
        return False
    for extra in sorted(req.extras):
        if f"{req.name}[{extra}]" in seen:
            continue
        seen.add(f"{req.name}[{extra}]")
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is not None and "extra" in str(sub.marker) and sub.marker.evaluate({"extra": extra}):
                if not satisfied(sub, seen):
                    return False
    return True


for text in wanted:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if not satisfied(req, set()):
        sys.exit(1)

dist = metadata.distribution(project["name"])
if dist.version != project["version"]:
    sys.exit(1)
direct = json.loads(dist.read_text("direct_url.json") or "{}")
if not direct.get("dir_info", {}).get("editable") or direct.get("url") != repo.as_uri():
    sys.exit(1)
setuptools = tomllib.loads((repo / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
for package in setuptools.get("packages", []):
    if package in setuptools.get("package-dir", {}):
        continue  # files shipped inside the package (the service template), not code to import
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or not Path(spec.origin).resolve().is_relative_to(repo):
        sys.exit(1)
scripts = set(project.get("scripts", {}))
if scripts - {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}:
    sys.exit(1)
PY
}

if python_deps_ok; then
    say "Python packages satisfied ($("$PYTHON" --version 2>&1))"
else
    say "installing the project and its dev extras with pip (editable)"
    pip_args=(install -q -e '.[dev]')
    # A distribution's own Python (PEP 668) refuses pip outside a venv; this machine is disposable.
    if "$PYTHON" -c 'import sys, sysconfig, pathlib; sys.exit(not (sys.prefix == sys.base_prefix and pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()))'; then
        pip_args+=(--break-system-packages)
    fi
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip "${pip_args[@]}" || die "pip install -e '.[dev]' failed"
fi

# --------------------------------------------------------------------------- 3. RabbitMQ / PostgreSQL
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rabbitmq_installed() {
    command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]]
}

postgres_installed() {
    compgen -G '/etc/postgresql/*/main' >/dev/null && { command -v pg_ctlcluster >/dev/null 2>&1 || [[ -x /usr/bin/pg_ctlcluster ]]; }
}

ensure_service() {  # NAME PORT INSTALLED-CHECK DEVSTACK-FUNCTION
    local name=$1 port=$2 installed=$3 fn=$4
    if listening "$port"; then
        say "$name listening on 127.0.0.1:$port"
    elif ! "$installed"; then
        say "WARNING: $name is not installed and not listening on :$port (integration tests will fail)"
    else
        say "starting $name"
        "$PYTHON" -c "from slingshot_runtime import devstack; devstack.$fn()" || die "could not start $name"
        say "$name listening on 127.0.0.1:$port"
    fi
}

ensure_service RabbitMQ 5672 rabbitmq_installed ensure_rabbitmq
ensure_service PostgreSQL 5432 postgres_installed ensure_postgres

say "ready in ${SECONDS}s"
