# The README's commands. Each sets up .venv on its own (scripts/setup_env.sh).
VENV := .venv
STAMP := $(VENV)/.installed
PROFILE ?= demo
OUT ?= runs/$(PROFILE)

.PHONY: demo test lab setup browser

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
