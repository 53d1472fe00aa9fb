# slingshot base image: Debian's python3 with the slingshot runtime in a venv, gnupg and
# pass for secrets, tini as PID 1. A service's image is two lines:
#
#   FROM slingshot-runtime
#   COPY handler.py /app/handler.py
#
# Runs as uid 10001 with a read-only root: everything it writes (GNUPGHOME, staged
# files, HOME) goes to /tmp, so mount a tmpfs there. Build (pip trusting a proxy's CA):
#   buildah bud -v /etc/ssl/certs:/mnt:ro --build-arg PIP_CERT=/mnt/ca-certificates.crt -t slingshot-runtime .
ARG BASE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------------------- build stage
# The venv is built here and copied: no pip, compilers or caches reach the final image.
FROM ${BASE} AS build
# binutils only for strip: it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first (from pyproject.toml, at the versions constraints.txt pins), so a change of
# the runtime's code reuses this layer.
COPY pyproject.toml README.md constraints.txt ./
ARG PIP_CERT=
# Size (the image must stay under 180 MB): botocore ships models of ~450 AWS services (28 MB)
# where the runtime's client needs S3 (STS kept for web-identity credentials; what client
# creation reads besides is data/*.json), and boto3's resource models likewise keep S3 only;
# wheels' extension modules carry symbols (13 MB, 2 MB stripped; the bundled *.libs are left
# alone); test suites are dead weight, and so are SQLAlchemy's dialects for databases other
# than PostgreSQL and SQLite. The build tools live in a venv of their own. The last RUN
# proves the pruned venv still works.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/slingshot \
 && python3 -m venv /tmp/tools \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && export PIP_CERT="${PIP_CERT}" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
 && /tmp/tools/bin/pip install "setuptools>=68" wheel \
 && /opt/slingshot/bin/pip install -r /tmp/requirements.txt -c constraints.txt \
 && site=$(/opt/slingshot/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts -exec rm -rf {} + \
 && find "$site/boto3/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 -exec rm -rf {} + \
 && find "$site" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf "$site/sqlalchemy/testing" "$site/sqlalchemy/dialects/mssql" "$site/sqlalchemy/dialects/mysql" "$site/sqlalchemy/dialects/oracle" \
 && find "$site" -name '*.so' ! -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && rm /tmp/requirements.txt
COPY slingshot_runtime/ slingshot_runtime/
COPY slingshot_microservice/ slingshot_microservice/
COPY templates/service/ templates/service/
COPY entrypoint /opt/slingshot/bin/entrypoint
# The runtime itself, then the installer goes: nothing installs packages at run time. The
# wheel's project template (for `slingshot new` on a developer's machine) has no use here.
RUN PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 /tmp/tools/bin/pip wheel --no-deps --no-build-isolation -w /tmp/dist . \
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/slingshot/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && rm -rf /opt/slingshot/lib/python3*/site-packages/slingshot_runtime/service_template \
 && /opt/slingshot/bin/pip uninstall -y --disable-pip-version-check pip setuptools \
 && rm -rf /opt/slingshot/bin/[Aa]ctivate* /opt/slingshot/bin/pip* /opt/slingshot/bin/__pycache__ /tmp/dist /tmp/tools \
 && sed -i '1s|.*|#!/opt/slingshot/bin/python|' /opt/slingshot/bin/entrypoint \
 && chmod 0755 /opt/slingshot/bin/entrypoint \
 && /opt/slingshot/bin/python -c 'import boto3, gnupg, pika, psycopg2, requests, sqlalchemy, yaml; \
      from yaml import CLoader; \
      import slingshot_runtime.service, slingshot_runtime.checks, slingshot_microservice; \
      sqlalchemy.create_engine("postgresql+psycopg2://u@h/d"); \
      boto3.session.Session().client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")'

# ---------------------------------------------------------------------------- final image
FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="slingshot-runtime" \
      org.opencontainers.image.description="Base image for slingshot queue workers: put handler.py with process() in /app" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="slingshot" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# python3 for the venv, gnupg + pass for secrets, tini as PID 1 (reaps gpg-agent), CA certificates.
# Like the slim base's own dpkg excludes: tini's static twin never lands. help()'s topic texts
# and the stdlib's regression-test support go after install (Python's postinst compiles them).
RUN echo 'path-exclude /usr/bin/tini-static' > /etc/dpkg/dpkg.cfg.d/slingshot \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 gnupg pass tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
      /usr/lib/python3.11/pydoc_data /usr/lib/python3.11/test \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin slingshot \
 && mkdir -p /app /run/secrets/slingshot
COPY --from=build /opt/slingshot /opt/slingshot
ENV PATH=/opt/slingshot/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLINGSHOT_HANDLER=/app/handler.py
WORKDIR /app
USER 10001:10001
# /healthz, /readyz and /metrics (SLINGSHOT_HEALTH_PORT).
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/slingshot/bin/entrypoint"]
