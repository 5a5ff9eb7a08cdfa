# One-command entry points. Every target sets up .venv first, so a fresh clone needs
# only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# torch==2.13.0 is installed first, on its own: it is the CPU build that pip takes from
# the local wheel folder. Without it, any torch requirement pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A second `make demo` resumes runs/demo (a finished one is only reported again)
# rather than having `nas search` refuse a folder that holds trials.jsonl;
# `rm -rf runs/demo` starts afresh.
demo: $(STAMP)
	@if [ -f runs/demo/trials.jsonl ]; then \
		echo "runs/demo exists: resuming it (rm -rf runs/demo for a fresh demo)"; \
		$(VENV)/bin/nas search --resume runs/demo; \
	else \
		$(VENV)/bin/nas search --config configs/demo.yaml --out runs/demo; \
	fi

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
