# make run   - set up and run the paper's full study (snakemake --cores $(CORES))
# make quick - set up and run the quick preset on the CIFAR-10 JPEG copy in data/
# make test  - set up and run the test suite (what CI runs)
# make lint  - ruff, snakefmt and snakemake --lint
# make docs-figures - rerun (if needed) the quick preset's study, copy Figures 2, 3, Table 2
#              and the claims into docs/ and rewrite README.md's study summary from them
VENV ?= .venv
PYTHON ?= python3
CORES ?= 8
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data/cifar10-jpeg.tar.gz

.PHONY: setup run quick test lint data docs-figures

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[tensorflow,workflow,dev]'
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
	$(BIN)/snakemake --cores 2 $(ARGS) --configfile config/quick.yaml

test: setup
	$(BIN)/pytest $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --cores 1

QUICK_STUDY := results/quick/study
docs-figures: setup data
	# (--configfile takes several files: targets go before it)
	$(BIN)/snakemake --cores 2 $(QUICK_STUDY)/table2.md $(QUICK_STUDY)/claims.md \
		$(QUICK_STUDY)/quantization_split.md \
		$(QUICK_STUDY)/figures/figure2_vanishing_act.png $(QUICK_STUDY)/figures/figure3_layerwise.png \
		$(QUICK_STUDY)/figures/degradation_heatmap.png --configfile config/quick.yaml
	$(BIN)/python -c 'import sys; from PIL import Image; \
		[Image.open(s).convert("RGB").resize((w := 900, round(Image.open(s).height * w / Image.open(s).width)), Image.LANCZOS).quantize(128).save(d, optimize=True) \
		 for s, d in zip(sys.argv[1::2], sys.argv[2::2])]' \
		$(QUICK_STUDY)/figures/figure2_vanishing_act.png docs/quick-figure2.png \
		$(QUICK_STUDY)/figures/figure3_layerwise.png docs/quick-figure3.png \
		$(QUICK_STUDY)/figures/degradation_heatmap.png docs/quick-heatmap.png
	cp $(QUICK_STUDY)/table2.md docs/quick-table2.md
	cp $(QUICK_STUDY)/table2.csv docs/quick-table2.csv
	cp $(QUICK_STUDY)/claims.md docs/quick-claims.md
	cp $(QUICK_STUDY)/claims.csv docs/quick-claims.csv
	cp $(QUICK_STUDY)/quantization_split.md docs/quick-quantization-split.md
	cp $(QUICK_STUDY)/quantization_split.csv docs/quick-quantization-split.csv
	$(BIN)/python -m quantinit.summary docs/quick-table2.csv docs/quick-claims.csv \
		docs/quick-quantization-split.csv README.md

# make bench - the benchmark (benchmarks/README.md): ARGS=--smoke for the 1-2 minute version
.PHONY: bench
bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)
