# The proxy (target "proxy") and the node agent (target "agent"): the wheel installed into a
# virtualenv in a build stage (with the server extra for the proxy, without for the agent)
# and copied into a slim runtime that runs as an unprivileged user.
# Build: docker build --target proxy -t jumpgate-proxy .   (the CDK app builds it from here)
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jumpgate ./jumpgate
RUN python -m venv /opt/proxy && /opt/proxy/bin/pip install --no-compile '.[server]' \
 && python -m venv /opt/agent && /opt/agent/bin/pip install --no-compile . \
 && find /opt -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.12-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 jumpgate \
 && useradd --system --uid 10001 --gid jumpgate --home-dir /var/lib/jumpgate --shell /usr/sbin/nologin jumpgate \
 && install -d -o jumpgate -g jumpgate -m 0700 /var/lib/jumpgate

# The proxy: HTTPS API 3080, users' SSH 3023, node tunnels 3024, peers 3021. Its config comes
# from JUMPGATE_CONFIG_YAML, its host key and TLS certificate from Secrets Manager (ECS).
FROM runtime AS proxy
COPY --from=build /opt/proxy /opt/proxy
ENV PATH=/opt/proxy/bin:$PATH
USER 10001:10001
EXPOSE 3080 3023 3024 3021
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import ssl, urllib.request as u; u.urlopen('https://127.0.0.1:3080/webapi/ping', context=ssl._create_unverified_context(), timeout=4)"]
ENTRYPOINT ["jumpgate", "start"]

# The node agent: dials out only (no ports). As this image's user it serves only its own
# login; run it as root (--user 0) to serve every login of the host it stands for.
FROM runtime AS agent
COPY --from=build /opt/agent /opt/agent
ENV PATH=/opt/agent/bin:$PATH
USER 10001:10001
ENTRYPOINT ["jumpgate", "start", "--services=node", "--data-dir=/var/lib/jumpgate"]
