# The README's commands. Each sets up .venv on its own (scripts/setup_env.sh).
VENV := .venv
STAMP := $(VENV)/.installed
PROFILE ?= demo
OUT ?= runs/$(PROFILE)

.PHONY: demo test lab setup browser mutants

$(STAMP): pyproject.toml scripts/setup_env.sh
	@bash scripts/setup_env.sh

setup: $(STAMP)

browser:
	@bash scripts/install_browser.sh

demo: $(STAMP)
	@$(VENV)/bin/cinefoley reproduce --profile $(PROFILE) --out $(OUT)

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest

lab: $(STAMP)
	@bash scripts/lab.sh

# Mutation testing (mutmut; not in CI: minutes per module on a laptop). MUTANTS narrows the run, e.g.
# make mutants MUTANTS='cinefoley.metrics.scores*'; then `$(VENV)/bin/mutmut results` lists the survivors.
MUTANTS ?=
mutants: $(STAMP)
	$(VENV)/bin/python -m pip install -qq --disable-pip-version-check "mutmut==3.8.1"
	$(VENV)/bin/mutmut run $(MUTANTS)
