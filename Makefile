# nginx-python
#   make module [FEATURES=unblock]   build nginx with this module into build/<flavour>/
#   make run                         build, then serve examples/ on 127.0.0.1:8000
#   make test                        build both flavours, cargo test, the Python suite
#   make test-asan                   both flavours under AddressSanitizer, memory-sensitive tests
#   make bench                       throughput/memory figures, side by side
#
# NGINX_SRC=/path overrides the nginx source (default: the pinned nginx-src crate).
# PYO3_PYTHON / PYTHON_CONFIG choose the Python (default /usr/bin/python3).

FEATURES ?=
# SANITIZE=address: nginx and the module's C shim built with gcc's
# AddressSanitizer, into build/<flavour>-asan/ (see test-asan).
SANITIZE ?=
FLAVOUR := $(if $(filter unblock,$(FEATURES)),unblock,sync)$(if $(SANITIZE),-asan)
SAN_CC := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer)
SAN_LD := $(if $(SANITIZE),--with-ld-opt=-fsanitize=$(SANITIZE))
SYNC := $(if $(filter unblock,$(FEATURES)),0,1)
BUILD := $(CURDIR)/build/$(FLAVOUR)
NGINX := $(BUILD)/objs/nginx
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= python3
NGINX_CONFIGURE_ARGS ?=
# cargo builds into build/<flavour>/objs/nginx-python (one target dir per
# flavour: the two features produce the same library file name).

.PHONY: module debian-module run test test-sync test-unblock test-asan test-asan-unblock test-asan-sync cargo-test bench deps clean

module: deps $(BUILD)/objs/Makefile
	@echo "==> building nginx ($(FLAVOUR)) with nginx-python"
	NGX_PYTHON_SANITIZE=$(SANITIZE) $(MAKE) -C $(BUILD)/nginx -j$(JOBS)
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
		--with-cc-opt="-DNGX_PYTHON_SYNC=$(SYNC) $(SAN_CC)" $(SAN_LD) \
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

# AddressSanitizer runs (both flavours). Instrumented: nginx and
# src/ffi/shim.c; not the Rust code (stable Rust has no sanitizer support)
# nor libpython, whose objects go through the instrumented malloc with
# PYTHONMALLOC=malloc. An ASan report aborts the process (abort_on_error):
# "exited on signal 6" in error.log fails the test, as any crash does, and
# the report is in that error.log. Leak checking is off: workers exit
# without finalizing the embedded interpreter, which LeakSanitizer would
# report; the RSS tests of the plain runs cover growth (TEST_NGINX_ASAN=1
# tells them not to assert RSS bounds, which ASan's quarantine skews).
# ASAN_TESTS: the files that exercise memory ownership (unblock-only files
# skip in the sync build).
ASAN_TESTS ?= test_unblock_abort test_unblock_overflow test_unblock_http test_unblock_socket \
	test_unblock_stream test_unblock_stream_bounds test_unblock_sleep test_unblock_resolver \
	test_http_request test_http_errors test_http_basic test_stream
ASAN_ENV := ASAN_OPTIONS=abort_on_error=1:detect_leaks=0:allocator_may_return_null=1 \
	PYTHONMALLOC=malloc TEST_NGINX_ASAN=1
test-asan: test-asan-unblock test-asan-sync

test-asan-unblock:
	$(MAKE) module FEATURES=unblock SANITIZE=address
	$(ASAN_ENV) TEST_NGINX_BINARY=$(CURDIR)/build/unblock-asan/objs/nginx $(PYTHON) t $(ASAN_TESTS)

test-asan-sync:
	$(MAKE) module SANITIZE=address
	$(ASAN_ENV) TEST_NGINX_BINARY=$(CURDIR)/build/sync-asan/objs/nginx $(PYTHON) t $(ASAN_TESTS)

# Both flavours; the suite's last line is "N passed, N failed, N skipped".
test: deps cargo-test test-sync test-unblock

bench: module
	$(PYTHON) tools/bench.py $(NGINX)

clean:
	rm -rf build target
