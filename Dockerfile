FROM python:3.11-slim
WORKDIR /opt/lockstep
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY config ./config
# The console's Chart.js, from the npm registry as vendor.json pins it (kept if the context
# already holds it with the pinned checksums): it is package data of the wheel.
COPY deploy/vendor.py ./deploy/vendor.py
RUN python deploy/vendor.py
# A plain install, as from a wheel: the default settings and policy ship as package data.
# docker-compose.yml mounts config/ at /etc/lockstep and names it in LOCKSTEP_CONFIG.
RUN pip install --no-cache-dir . && rm -rf /opt/lockstep
WORKDIR /var/lib/lockstep
EXPOSE 9108
ENTRYPOINT ["lockstep"]
CMD ["run", "--demo"]
