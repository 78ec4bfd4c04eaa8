# The one build recipe of every Lambda artifact (SAM's makefile builder): the functions' and
# CommonLayer's Makefiles include this file and call `lambda_python_build`. SAM's python3.12 builder
# ships no bytecode and Lambda's /var/task and /opt are read-only, so every cold start compiled every
# module it imported (the intake's floor alone took about 2 s from source against 0.5 s compiled:
# docs/performance.md). Unchecked-hash .pyc files are used as they are, whatever the files' times in
# the package.
#
# SAM runs `make --makefile <CodeUri>/Makefile build-<LogicalId>` in a copy of the CodeUri directory,
# so requirements.txt and the sources are read from the working directory, and a Makefile finds this
# file from its own path (the copy does not hold it). `sam build` keeps no record of this file in its
# cache: after changing it, build with `sam build --no-cached`.
PYTHON ?= python3.12

# $(call lambda_python_build,<directory>,<sources>): requirements.txt installed into <directory> as
# wheels for Lambda's arm64 CPython 3.12 (wheels only, as SAM's builder picks them), <sources> copied
# there, and everything in it compiled by Python 3.12. pip's console scripts (bin/) are dropped: they
# name the build machine's Python and Lambda runs none (SAM's python builder leaves them out too).
# Every .pyc must be an unchecked-hash one: `sam deploy` (`sam package`, `sam sync`) zips each file
# with the date 1980-01-01, so a timestamp .pyc never matches its source in Lambda. pip therefore
# compiles nothing (its .pyc files are timestamp ones, and compileall keeps a timestamp .pyc that
# matches), and any __pycache__ the sources bring from local runs is removed before compiling.
define lambda_python_build
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12) and "the bytecode must be made by Python 3.12, the runtime")'
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --requirement requirements.txt \
		--target "$(1)" --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 --only-binary=:all:
	rm -rf "$(1)/bin"
	cp -R $(2) "$(1)/"
	find "$(1)" -name __pycache__ -type d -prune -exec rm -rf {} +
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(1)"
endef
