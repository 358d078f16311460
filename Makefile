# nginx-python
#   make module [FEATURES=unblock]   build nginx with this module into build/<flavour>/
#   make run                         build, then serve examples/ on 127.0.0.1:8000
#   make test                        build both flavours, cargo test, the Python suite
#   make test-asan                   both flavours under AddressSanitizer, memory-sensitive tests
#   make test-pythons [PYTHONS=...]  the suite on every CPython 3.9+ found (pyenv, /usr/bin), both builds
#   make bench                       Python vs Lua vs njs in Debian's nginx (tools/bench.py)
#   make deb [FEATURES=unblock]      a .deb for Debian's nginx (tools/mkdeb)
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
# BUILD_NAME: the directory under build/ (test-pythons uses py3.13-unblock, ...).
BUILD_NAME ?= $(FLAVOUR)
BUILD := $(CURDIR)/build/$(BUILD_NAME)
NGINX := $(BUILD)/objs/nginx
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= python3
NGINX_CONFIGURE_ARGS ?=
# cargo builds into build/<flavour>/objs/nginx-python (one target dir per
# flavour: the two features produce the same library file name).

.PHONY: module debian-module deb test-deb run test test-deps test-sync test-unblock test-pythons test-asan test-asan-unblock test-asan-sync cargo-test bench deps clean

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

# A dynamic module for Debian's own nginx (1.22.1, nginx-core), into
# build/debian/<flavour>/objs/ngx_python_module.so: built with nginx-dev's
# source and configure flags (--with-compat) plus the stream options that
# /usr/sbin/nginx was built with (Debian builds stream as a dynamic module,
# ngx_stream_module.so, which must be loaded before this one). Both flavours
# share one cargo target directory (the crates compile once).
DEBIAN := $(CURDIR)/build/debian/$(FLAVOUR)
debian-module: deps
	@tools/deps nginx-dev nginx-core
	rm -rf $(DEBIAN) && mkdir -p $(DEBIAN) $(CURDIR)/build/debian/cargo
	cp -a /usr/share/nginx/src $(DEBIAN)/nginx
	stream=$$(/usr/sbin/nginx -V 2>&1 | tr ' ' '\n' | grep -- '^--with-stream' | grep -v '_module=dynamic' | tr '\n' ' ') && \
	cd $(DEBIAN)/nginx && NGX_PYTHON_TARGET_DIR=$(CURDIR)/build/debian/cargo \
	bash -c '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" '"$$stream"' \
		--builddir=$(DEBIAN)/objs --add-dynamic-module=$(CURDIR) \
		$(if $(filter unblock,$(FEATURES)),--with-cc-opt=-DNGX_PYTHON_SYNC=0)' > $(DEBIAN)/configure.log
	$(MAKE) -C $(DEBIAN)/nginx -f $(DEBIAN)/objs/Makefile $(DEBIAN)/objs/ngx_python_module.so
	@echo "==> module: $(DEBIAN)/objs/ngx_python_module.so"

# A .deb of that module for Debian's nginx, into build/deb/: package
# libnginx-mod-python (sync) or, with FEATURES=unblock,
# libnginx-mod-python-unblock. See tools/mkdeb.
deb: debian-module
	@tools/deps dpkg-dev
	tools/mkdeb $(FLAVOUR) $(DEBIAN)/objs/ngx_python_module.so $(CURDIR)/build/deb

# Both packages, each installed with apt-get and run by Debian's nginx
# (t/test_debian_package.py; the packages are purged again afterwards).
test-deb:
	rm -rf build/deb
	$(MAKE) deb
	$(MAKE) deb FEATURES=unblock
	TEST_NGINX_BINARY=/usr/sbin/nginx TEST_DEB_PACKAGES="$$(echo build/deb/*.deb)" \
		$(PYTHON) t test_debian_package

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
	test_http_request test_http_errors test_http_basic test_stream test_http_filters test_http_subrequest \
	test_http_send_buffers test_http_fuzz
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
test: test-deps cargo-test test-sync test-unblock test-deb

# The build's packages plus the real servers the suite talks to.
test-deps:
	@tools/deps --test

# Python (this module, both flavours) against Lua and njs in one Debian nginx,
# plus the 1.28 static builds; installs Debian's nginx, Lua, njs, valgrind.
bench:
	@tools/deps nginx-core libnginx-mod-http-lua libnginx-mod-http-js lua-cjson valgrind \
		python3-flask uwsgi-core uwsgi-plugin-python3 gunicorn
	$(MAKE) module
	$(MAKE) module FEATURES=unblock
	$(MAKE) debian-module
	$(MAKE) debian-module FEATURES=unblock
	$(PYTHON) tools/bench.py $(BENCH_ARGS)

# The whole suite against each CPython (see tools/test-pythons): every 3.9+
# under pyenv plus /usr/bin/python3, or PYTHONS="3.9 3.13 /path/python3"
# (also the words oldest/newest); FLAVOURS="sync unblock". Builds go to
# build/py<version>-<flavour>; the summary table to build/test-pythons.txt.
test-pythons: deps
	$(PYTHON) tools/test-pythons

clean:
	rm -rf build target
