# The project's commands. `make test` is what CI runs (through .ci/run); it installs what it needs.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: help install system-deps bench-deps demo test lint test-rust test-python test-windows bench soak soak-service model-long mutants mutants-rust mutants-py mutants-diff

# Where the test runs keep their temporary folders (one per run: see test-python).
TESTTMP ?= /tmp/softcopy-tests-$(shell echo $$PPID)

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: system-deps ## build softcopy (Rust + Python) in place, with test and lint tools
	@date +'== install started at %T'
	$(PIP) install --quiet --disable-pip-version-check -e '.[test,lint]'
	@date +'== install ended at %T'

system-deps: ## Debian packages the tests drive: sshd + sshfs (a network destination), tmux (the display), util-linux + e2fsprogs (loop filesystems), GNU time (peak RSS in benches), libfuse2 (a case-insensitive destination), rsync (a contender in the network bench), strace (kills softcopy at an exact system call in the crash tests), rclone + erofs-utils (sources whose ctime is not the kernel's stamp, in the mark's adversary tests)
	@command -v sshfs >/dev/null && test -x /usr/sbin/sshd && command -v tmux >/dev/null \
		&& test -x /usr/bin/time && command -v rsync >/dev/null && command -v strace >/dev/null && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null \
		&& command -v rclone >/dev/null && command -v mkfs.erofs >/dev/null \
		&& ldconfig -p | grep -q 'libfuse.so.2 ' || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			openssh-server openssh-client sshfs util-linux procps tmux time e2fsprogs libfuse2 rsync strace rclone erofs-utils >/dev/null; }

demo: ## install softcopy and copy a simulated acquisition live
	$(PIP) install --quiet --disable-pip-version-check . && softcopy --demo

lint: install ## formatting, clippy, ruff, mypy, stub check
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
	@# The Windows code paths must at least compile; best effort where the target can be installed.
	@if timeout 120 rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1; then \
		RUSTFLAGS="-D warnings" cargo check --quiet --lib --target x86_64-pc-windows-gnu && echo "windows build: ok"; \
	else echo "windows build: skipped (target x86_64-pc-windows-gnu not installable here)"; fi
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest softcopy._softcopy --allowlist .stubtest-allowlist
	@date +'== lint ended at %T'

test-rust: ## the tracker state machine and the copy chain
	cargo test
	@date +'== test-rust ended at %T'

test-python: install ## acceptance tests with real writers, faults, the CLI, properties, the wheel
	@# Two workers (most tests wait on processes, not on a core); then, alone, the tests that change
	@# a kernel-wide setting (conftest.sysctl): nothing else may run beside them.
	@# Each run's temporary folders its own (--basetemp): pytest's sweep of its shared numbered
	@# folders would otherwise remove another session's while it runs, or fail on a mount it left.
	@mkdir -p $(TESTTMP)
	SOFTCOPY_TEST_WHEEL=1 $(PYTHON) -m pytest -n 2 -m "not kernel_wide" --durations=25 --basetemp=$(TESTTMP)/bulk
	@date +'== test-python (two workers) ended at %T'
	$(PYTHON) -m pytest -m kernel_wide --durations=5 --basetemp=$(TESTTMP)/kernel_wide
	-@rm -rf $(TESTTMP)
	@date +'== test-python ended at %T'

test-windows: ## the engine built for Windows, its Rust tests and live tests under Wine (installs wine + mingw)
	PYTHON=$(PYTHON) bash tests/windows/run.sh
	@date +'== test-windows ended at %T'

test: lint test-rust mutants-diff test-windows test-python ## everything CI runs (each part prints when it ended: the suite's time)

model-long: install ## the model test's long random search: 2000 sequences, seed printed (not part of CI)
	seed=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "model-long: SEED=$$seed replays this run"; \
	cd tests && SOFTCOPY_HYPOTHESIS=random SOFTCOPY_MODEL_EXAMPLES=2000 $(PYTHON) -m pytest -p no:cacheprovider \
		--hypothesis-show-statistics --hypothesis-seed=$$seed test_model.py

mutants: mutants-rust mutants-py ## both mutation runs, the engine's and the Python layer's (docs/mutants.md; not part of CI)

mutants-rust: ## cargo-mutants over the engine's decision modules with the Rust tests (docs/mutants.md; about an hour and a half)
	@command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
	cargo mutants -o target/mutants $(foreach f,track/mod track/sweep track/settled source/rescan run/finish/mod end/mover end/aside end/journal end/verify dest/mod copy/mod source/watcher source/root,-f src/$(f).rs) -- --lib

mutants-py: ## mutmut (pinned, in a venv of its own) over the Python layer's decision code with the fast tests (docs/mutants.md, "Python"; MUTMUT_JOBS=1)
	PYTHON=$(PYTHON) bash tests/mutants_py.sh

# The mutants of the lines a change touched (against main's merge base, or MUTANTS_BASE), with
# the Rust tests: a mutant that survives fails it, and so does the cap (an unfinished run proves
# nothing). Nothing to do (and nothing installed) where no engine source changed: main's own CI.
MUTANTS_CAP ?= 600
mutants-diff: ## cargo-mutants over what this change touched (docs/mutants.md; a survivor fails it, capped at MUTANTS_CAP s)
	@base=$${MUTANTS_BASE:-$$(git merge-base HEAD origin/main 2>/dev/null)}; \
	if [ -z "$$base" ]; then echo "mutants-diff: no origin/main to compare with (MUTANTS_BASE=HEAD~1 sets one): nothing to mutate"; exit 0; fi; \
	mkdir -p target && git diff $$base -- 'src/*.rs' > target/mutants.diff; \
	if [ ! -s target/mutants.diff ]; then echo "mutants-diff: no engine source changed since $$base: nothing to mutate"; exit 0; fi; \
	command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants; \
	echo "mutants-diff: the mutants of git diff $$base ($$(grep -c '^+++ .*\.rs$$' target/mutants.diff) Rust files)"; \
	timeout $(MUTANTS_CAP) cargo mutants --in-diff target/mutants.diff -o target/mutants-diff --timeout 60 -j 1 -- --lib; \
	rc=$$?; [ $$rc -ne 124 ] || echo "mutants-diff: stopped at the $(MUTANTS_CAP) s cap, not every mutant was tested"; exit $$rc

soak: install ## the long soaks, 10 minutes each (not part of CI): four live targets with random faults, then the service form (soak-service)
	$(PYTHON) tests/soak.py --minutes 10
	$(PYTHON) tests/soak_service.py --minutes 10

soak-service: install ## the service form's soak alone: 300 acquisitions, restarts, sshd dropped under sshfs, a broken webhook (SEED=N replays; as root)
	$(PYTHON) tests/soak_service.py --minutes 10 $${SEED:+--seed $$SEED}

bench-deps: ## what only the full benches compare against: rclone (the network bench's peer)
	@command -v rclone >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends rclone >/dev/null; }

bench: bench-deps ## whole-process comparisons, the full runs (see BENCHMARKS.md; about 40 minutes, as root)
	$(PIP) install --quiet --disable-pip-version-check .
	cd benches && $(PYTHON) bulk.py
	cd benches && $(PYTHON) bulk.py --chunks 50000 --chunk-kib 16 --no-original
	cd benches && $(PYTHON) live.py
	cd benches && $(PYTHON) live.py --rate-mib 0 --runs 2
	cd benches && $(PYTHON) scale.py
	cd benches && $(PYTHON) rate.py
	cd benches && $(PYTHON) impact.py
	cd benches && $(PYTHON) writers_matrix.py
	cd benches && $(PYTHON) cpu.py
	cd benches && $(PYTHON) network.py
	cd benches && $(PYTHON) sftp.py
