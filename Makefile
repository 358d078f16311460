# nginx-python
#   make module [FEATURES=unblock]   build nginx with this module into build/<flavour>/
#   make run                         build, then serve examples/ on 127.0.0.1:8000
#   make test                        build both flavours, cargo test, the Python suite
#   make test-pythons [PYTHONS=...]  the suite on every CPython 3.9+ found (pyenv, /usr/bin), both builds
#   make bench                       throughput/memory figures, side by side
#
# NGINX_SRC=/path overrides the nginx source (default: the pinned nginx-src crate).
# PYO3_PYTHON / PYTHON_CONFIG choose the Python (default /usr/bin/python3).

FEATURES ?=
FLAVOUR := $(if $(filter unblock,$(FEATURES)),unblock,sync)
SYNC := $(if $(filter unblock,$(FEATURES)),0,1)
# BUILD_NAME: the directory under build/ (test-pythons uses py3.13-unblock, ...).
BUILD_NAME ?= $(FLAVOUR)
BUILD := $(CURDIR)/build/$(BUILD_NAME)
NGINX := $(BUILD)/objs/nginx
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= python3
NGINX_CONFIGURE_ARGS ?=
# cargo builds into build/<flavour>/objs/nginx-python (one target dir per
# flavour: the two features produce the same library file name).

.PHONY: module debian-module run test test-sync test-unblock test-pythons cargo-test bench deps clean

module: deps $(BUILD)/objs/Makefile
	@echo "==> building nginx ($(FLAVOUR)) with nginx-python"
	$(MAKE) -C $(BUILD)/nginx -j$(JOBS)
	@echo "==> nginx: $(NGINX)"

deps:
	@tools/deps

# Configure a private copy of the nginx source (configure writes into it).
$(BUILD)/objs/Makefile: config config.make Makefile
	@src=$$(tools/nginx-src) && echo "==> nginx source: $$src" && \
	rm -rf $(BUILD) && mkdir -p $(BUILD) && cp -a "$$src" $(BUILD)/nginx && \
	chmod -R u+w $(BUILD)/nginx
	@echo "==> configuring nginx ($(FLAVOUR))"
	cd $(BUILD)/nginx && \
	if [ -x ./configure ]; then cfg=./configure; else cfg=./auto/configure; fi && \
	$$cfg --builddir=$(BUILD)/objs --with-stream --with-debug \
		--with-cc-opt=-DNGX_PYTHON_SYNC=$(SYNC) \
		--add-module=$(CURDIR) $(NGINX_CONFIGURE_ARGS) > $(BUILD)/configure.log || \
		{ tail -20 $(BUILD)/configure.log; exit 1; }

# A dynamic module for Debian's own nginx (1.22.1, nginx-core): built with
# nginx-dev's source and configure flags (--with-compat), loaded with
#   load_module /path/to/build/debian/objs/ngx_python_module.so;
debian-module: deps
	@tools/deps nginx-dev
	rm -rf build/debian && mkdir -p build/debian
	cp -a /usr/share/nginx/src build/debian/nginx
	cd build/debian/nginx && bash -c '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
		--builddir=$(CURDIR)/build/debian/objs --add-dynamic-module=$(CURDIR) \
		$(if $(filter unblock,$(FEATURES)),--with-cc-opt=-DNGX_PYTHON_SYNC=0)' > $(CURDIR)/build/debian/configure.log
	$(MAKE) -C build/debian/nginx -f $(CURDIR)/build/debian/objs/Makefile modules
	@echo "==> module: $(CURDIR)/build/debian/objs/ngx_python_module.so"

run: module
	@mkdir -p build/run/logs
	@echo "==> serving examples/ on http://127.0.0.1:8000/ (Ctrl-C stops)"
	$(NGINX) -p $(CURDIR)/build/run -c $(CURDIR)/examples/nginx.conf

cargo-test:
	PYO3_PYTHON=$${PYO3_PYTHON:-/usr/bin/python3} cargo test --lib

test-sync:
	$(MAKE) module
	TEST_NGINX_BINARY=$(CURDIR)/build/sync/objs/nginx $(PYTHON) t

test-unblock:
	$(MAKE) module FEATURES=unblock
	TEST_NGINX_BINARY=$(CURDIR)/build/unblock/objs/nginx $(PYTHON) t

# Both flavours; the suite's last line is "N passed, N failed, N skipped".
test: deps cargo-test test-sync test-unblock

# The whole suite against each CPython (see tools/test-pythons): every 3.9+
# under pyenv plus /usr/bin/python3, or PYTHONS="3.9 3.13 /path/python3"
# (also the words oldest/newest); FLAVOURS="sync unblock". Builds go to
# build/py<version>-<flavour>; the summary table to build/test-pythons.txt.
test-pythons: deps
	$(PYTHON) tools/test-pythons

bench: module
	$(PYTHON) tools/bench.py $(NGINX)

clean:
	rm -rf build target
