# make run   - set up and run the paper's full study (snakemake --cores $(CORES))
# make quick - set up and run the quick preset on the CIFAR-10 JPEG copy in data/
# make test  - set up and run the test suite (what CI runs)
# make lint  - ruff, snakefmt and snakemake --lint
VENV ?= .venv
PYTHON ?= python3
CORES ?= 8
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data/cifar10-jpeg.tar.gz

.PHONY: setup run quick test lint data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/snakemake --cores $(CORES) $(ARGS)

data/cifar10-jpeg:
	@test -f $(SHARED_DATA) || { echo "no $(SHARED_DATA): set SHARED_DATA=path/to/cifar10-jpeg.tar.gz or use data.source: keras"; exit 1; }
	mkdir -p data
	tar xzf $(SHARED_DATA) -C data

data: data/cifar10-jpeg

quick: setup data
	$(BIN)/snakemake --cores 2 --configfile config/quick.yaml $(ARGS)

test: setup
	$(BIN)/pytest $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --cores 1
