# The image of a GKE TPU pretraining job (scripts/launch.py gke --image ...): the repository
# at /app (the JobSet's workingDir) with the TPU build of the pinned JAX.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/octo_like:TAG . && docker push ...
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first (a layer that survives code edits), then the code.
COPY setup.py requirements.lock ./
RUN mkdir octo_like && touch octo_like/__init__.py && \
    pip install --no-cache-dir -c requirements.lock -e ".[tpu]"
COPY . .
RUN pip install --no-cache-dir --no-deps -c requirements.lock -e ".[tpu]"
ENV TF_CPP_MIN_LOG_LEVEL=2
CMD ["python", "train.py", "--help"]
