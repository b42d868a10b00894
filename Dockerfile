# msa500-emu: the HP MSA500 emulator, two iSCSI portals and the management API.
#   docker build -t msa500-emu .
#   docker run -d --network host -v msa500-state:/var/lib/msa500-emu msa500-emu
# BASE: any Debian-like image with python3 (>= 3.11) and pip, e.g. a local stand-in when
# Docker Hub is out of reach (CI builds ../shared/tools/make-localbase's localbase/python:bookworm).
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The project from the build context (.dockerignore keeps it to the package sources), no extras.
COPY pyproject.toml README.md /tmp/msa500-emu/
COPY firmware_model /tmp/msa500-emu/firmware_model
COPY msa500_emu /tmp/msa500-emu/msa500_emu
RUN python -m pip install --no-cache-dir /tmp/msa500-emu \
    && rm -rf /tmp/msa500-emu \
    && useradd --uid 10001 --user-group --no-log-init --no-create-home --home-dir /var/lib/msa500-emu \
       --shell /usr/sbin/nologin msa500 \
    && mkdir -p /var/lib/msa500-emu \
    && chown msa500:msa500 /var/lib/msa500-emu \
    && chmod 0750 /var/lib/msa500-emu

# LAB_HOST=1 adds QEMU (TCG) and busybox for the cluster nodes of compose.yaml (docs/containers.md);
# the default image has neither.
ARG LAB_HOST=
# hadolint ignore=DL3008
RUN if [ -n "$LAB_HOST" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends qemu-system-x86 ipxe-qemu busybox \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Drive images, controller NVRAM, the cache file and the event log live here.
ENV MSA500_STATE_DIR=/var/lib/msa500-emu \
    MSA500_PORT1=127.0.0.1:3260 \
    MSA500_PORT2=127.0.0.1:3261 \
    MSA500_API=127.0.0.1:8500
VOLUME ["/var/lib/msa500-emu"]
WORKDIR /var/lib/msa500-emu
USER 10001:10001

EXPOSE 3260/tcp 3261/tcp 8500/tcp

# No curl in slim images: python asks the API (wherever MSA500_API puts it) for /api/health.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; h, _, p = os.environ.get('MSA500_API', '127.0.0.1:8500').rpartition(':'); h = h.strip('[]'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h = '[' + h + ']' if ':' in h else h; r.build_opener(r.ProxyHandler({})).open('http://' + h + ':' + p + '/api/health', timeout=4).read()"]

# SIGTERM (docker stop) closes the sessions and flushes the drive images.
STOPSIGNAL SIGTERM
ENTRYPOINT ["msa500-emu"]
CMD ["serve"]
