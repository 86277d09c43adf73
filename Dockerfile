FROM python:3.11-slim
WORKDIR /opt/lockstep
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY config ./config
RUN pip install --no-cache-dir -e .
EXPOSE 9108
ENTRYPOINT ["lockstep"]
CMD ["run", "--demo"]
