# llmaaa ML backend (and RQ worker) image. CPU torch is pinned so no CUDA build is pulled.
FROM python:3.11-slim
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
VOLUME /data
EXPOSE 9090
# One process with threads: the reply cache and demo index live in memory (see backend/wsgi.py).
CMD ["gunicorn", "backend.wsgi:app", "--bind", "0.0.0.0:9090", "--workers", "1", "--threads", "16", "--timeout", "300"]
