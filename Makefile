# Two entry points: `make run` (the daemon on the embedded default bundle) and `make test` (the whole suite).
# Both set themselves up (system packages, .venv) and are quick no-ops when already set up.
.PHONY: run test setup-run setup-test prepare bench clean

run: setup-run
	.venv/bin/voiced model prepare default
	.venv/bin/voiced serve

test: setup-test
	scripts/test.sh

setup-run:
	@scripts/setup.sh run

setup-test:
	@scripts/setup.sh test

prepare: setup-run
	.venv/bin/voiced model prepare default

bench: setup-test
	@for b in benchmarks/*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf .venv .venv-build .pytest_cache build *.egg-info
