# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
HOST ?= 127.0.0.1
PORT ?= 5000
# Debian packages the tests and training need (Redis for the Celery path, Chromium for browser
# tests, fonts for OCR renders, Tesseract for the OCR peer comparison, PostgreSQL for the store,
# nginx to check the example proxy configuration).
# Fonts the OCR training renders (training/ocr_render.py, training/ocr_distort.py) and the ones its
# out-of-collection sets keep out of training (training/ocr_evalsets.py), and the generalization
# development sets' faces (training/ocr_eval.py GEN_FONTS).
OCR_FONTS := fonts-noto-mono fonts-croscore fonts-go fonts-hack fonts-inconsolata fonts-jetbrains-mono \
	fonts-courier-prime fonts-firacode fonts-mononoki fonts-league-mono fonts-fantasque-sans fonts-hermit \
	fonts-anonymous-pro fonts-b612 fonts-open-sans fonts-roboto-unhinted fonts-3270 fonts-agave \
	fonts-dejavu-extra fonts-crosextra-carlito fonts-crosextra-caladea fonts-ebgaramond fonts-cantarell \
	fonts-lato fonts-monoid fonts-oxygen fonts-sil-gentium fonts-cmu
# Handwriting faces the digit model's out-of-collection set typesets (training/numbers_eval.py).
DIGIT_FONTS := fonts-bwht fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript \
	fonts-humor-sans fonts-klee fonts-comic-neue fonts-dancingscript fonts-kaushanscript fonts-kiloji
APT_PACKAGES := redis-server postgresql chromium chromium-driver fonts-ocr-b fonts-dejavu-core \
	fonts-liberation fonts-freefont-ttf tesseract-ocr tesseract-ocr-eng wrk nginx-light \
	$(OCR_FONTS) $(DIGIT_FONTS)

.PHONY: run test test-browser test-fast install install-dev system-deps lint bench bench-peers cluster serve gunicorn clean data

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(PIP) install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(PIP) install --quiet -e ".[train,dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Set up and run the app on its embedded defaults (SQLite, in-process thumbnail worker).
run: install
	$(BIN)/python serve.py --host $(HOST) --port $(PORT)

## Production-style: gunicorn with gunicorn.conf.py.
gunicorn: install
	$(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

## Install the Debian packages the full test suite uses (needs root or sudo).
system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "no apt-get: install $(APT_PACKAGES) yourself; tests that need them skip with a reason"; fi

## Set up and run the whole test suite, real-browser tests included, on every core (pytest-xdist:
## tests take free ports and their own temporary folders, so any two can run side by side;
## worksteal keeps the long training and server tests from ending up queued behind each other).
test: system-deps install-dev
	$(BIN)/python -m pytest -n auto --dist worksteal

## The real-browser tests alone: Playwright driving Debian's Chromium against a live server.
test-browser: system-deps install-dev
	$(BIN)/python -m pytest -m browser tests/browser

## The fast tests only (no TensorFlow, no browser, no servers).
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not tensorflow and not browser and not redis and not postgres and not slow and not cluster"

## Download the training data sets into data/ from their public sources, each checked against the
## SHA-256 of the copy the models were trained on (needs internet; says so without it).
data: install
	$(BIN)/python -m training.download_data --out data

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install-dev
	$(BIN)/python -m bench.run

## Ours against BentoML and LitServe serving the same models, interleaved: each peer in its own
## pinned venv (bench/peers/.venv-*, installed on first use); about 10 minutes (docs/PERFORMANCE.md).
bench-peers: install-dev
	$(BIN)/python -m bench.peers

## Two app nodes behind nginx with PostgreSQL, Redis and a Celery worker, on loopback: locust
## through nginx while a node is killed, the worker stopped and both nodes reloaded (docs/DEPLOYMENT.md).
cluster: system-deps install-dev
	$(BIN)/python -m bench.cluster

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
