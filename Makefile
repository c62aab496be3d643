# lsq - build, test, install.
#
#   make              engine library (static + shared), CLI, pkg-config file -> build/
#   make deps         install missing Debian packages (apt-get, as root)
#   make run          the main job: the HTTP server on port 8080 with the bundled models (PORT=...)
#   make test         everything: C unit tests, CLI tests, PyTorch comparisons, the server over HTTP
#   make bench        engine vs ONNX Runtime, side by side (see README, Performance)
#   make loadtest     wrk against lsq-server at several concurrency levels
#   make docker-test  the container image, compose file and Kubernetes manifests, via podman (root)
#   make cluster-test three servers behind nginx on loopback, one drained under load (wrk)
#   make test WITH_DOCKER=1   the test suite plus docker-test and cluster-test (what CI runs)
#   make install      PREFIX=/usr/local
#   make SANITIZE=address|undefined   instrumented build in build-<sanitizer>/
#   make DEBUG=1      -O0 -g build in build-debug/

CC      ?= gcc
PREFIX  ?= /usr/local
PYTHON  ?= /usr/bin/python3

ifeq ($(origin CC),default)
CC := gcc
endif

BUILD := build
OPT   := -O2
ifdef DEBUG
BUILD := build-debug
OPT   := -O0 -g3
endif
ifdef SANITIZE
BUILD := build-$(SANITIZE)
OPT   := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=$(SANITIZE)
endif

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
           -Wpointer-arith -Wvla -Wformat=2
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -fPIC -fvisibility=hidden $(WARN) -Iengine/include -Iengine/src -MMD -MP \
           -fno-math-errno -fno-trapping-math
LDLIBS  := -lopenblas -ljansson -lturbojpeg -lpng -lwebp -lz -lm -lpthread
LDFLAGS += $(SAN_LDFLAGS)

# One ISA per translation unit, chosen by the file name's suffix (XNNPACK style): no -march=native.
ISA_avx512 := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c -mavx2 -mbmi2
ISA_avx512vnni := $(ISA_avx512) -mavx512vnni
ISA_avx2   := -mavx2 -mfma -mf16c
ISA_avxvnni := $(ISA_avx2) -mavxvnni

ENGINE_SRC := $(sort $(wildcard engine/src/*.c engine/src/kernels/*.c))
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC    := $(sort $(wildcard engine/cli/*.c))
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
SERVER_SRC := $(sort $(wildcard server/*.c))
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_LIBS := -lmicrohttpd
# The server's build id (cache key of the accuracy report, --version): the git revision.
GIT_REV    := $(shell git describe --always --dirty 2>/dev/null || echo unknown)

LIB_A  := $(BUILD)/liblsq.a
LIB_SO := $(BUILD)/liblsq.so
CLI    := $(BUILD)/lsq
SERVER := $(BUILD)/lsq-server
PC     := $(BUILD)/lsq.pc
BENCH_GEMM := $(BUILD)/bench_gemm
BENCH_LEVELS := $(BUILD)/bench_levels
BENCH_EPILOGUE := $(BUILD)/bench_epilogue

.PHONY: all deps deps-docker run test test-unit test-cli test-torch test-server bench loadtest \
        docker-test cluster-test models report install uninstall clean
all: $(LIB_A) $(LIB_SO) $(CLI) $(SERVER) $(PC) $(UNIT_BIN) $(BENCH_GEMM) $(BENCH_LEVELS) $(BENCH_EPILOGUE)

$(BUILD)/obj/%__avx512.o: %__avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avx512) -c $< -o $@
$(BUILD)/obj/%__avx512vnni.o: %__avx512vnni.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avx512vnni) -c $< -o $@
$(BUILD)/obj/%__avx2.o: %__avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avx2) -c $< -o $@
$(BUILD)/obj/%__avxvnni.o: %__avxvnni.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avxvnni) -c $< -o $@
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB_A): $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(LIB_SO): $(ENGINE_OBJ)
	$(CC) -shared -Wl,-soname,liblsq.so.0 $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(CLI): $(CLI_OBJ) $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB_A) $(LDLIBS)
$(SERVER): $(SERVER_OBJ) $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(LIB_A) $(SERVER_LIBS) $(LDLIBS)
$(BUILD)/obj/server/web.o: server/web/index.html
$(BUILD)/obj/server/main.o $(BUILD)/obj/server/options.o $(BUILD)/obj/server/report.o \
$(BUILD)/obj/server/calibrate.o: CFLAGS += \
    -DLSQ_SERVER_BUILD='"git $(GIT_REV)"' -DLSQ_SERVER_SHARE='"$(PREFIX)/share/lsq"'
$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS)
$(BENCH_GEMM): tests/bench/bench_gemm.c $(LIB_A)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS)
$(BENCH_LEVELS): tests/bench/bench_levels.c $(LIB_A)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS)
$(BENCH_EPILOGUE): tests/bench/bench_epilogue.c engine/src/kernels/math__avx512.h
	$(CC) $(CFLAGS) $(ISA_avx512) $(LDFLAGS) -o $@ $< -lm
$(PC): engine/lsq.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define LSQ_VERSION "\(.*\)"/\1/p' engine/include/lsq.h)|' $< > $@

# --- set-up -------------------------------------------------------------------------------------
DEB_BUILD := gcc make pkg-config libopenblas-dev libjansson-dev libturbojpeg0-dev libpng-dev libwebp-dev \
             zlib1g-dev libmicrohttpd-dev
DEB_TEST  := bc python3-torch python3-torchvision python3-pil python3-numpy dataset-fashion-mnist curl wrk \
             chromium chromium-driver
# Container tests only (make docker-test, make cluster-test, make test WITH_DOCKER=1): a plain
# `make test` never pulls podman.
DEB_DOCKER := podman debootstrap docker-compose yamllint nginx wrk curl python3-yaml python3-pil
deb_install = missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make $@: installing $$missing"; \
	    if [ "$$(id -u)" != 0 ]; then echo "make $@: run as root (apt-get)" >&2; exit 1; fi; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make $@: all packages present"; fi
deps:
	@$(call deb_install,$(DEB_BUILD) $(DEB_TEST))
deps-docker:
	@$(call deb_install,$(DEB_DOCKER))

# --- the README's two commands ------------------------------------------------------------------
# Both install what is missing first, so they work on a fresh Debian 12 machine.
# make run: the HTTP server on port $(PORT) with the bundled models (models/bundled/manifest.json).
PORT ?= 8080
run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@if [ ! -f models/bundled/manifest.json ]; then \
	    echo "make run: models/bundled/manifest.json is missing, so there is nothing to serve." >&2; \
	    echo "  The bundled models are trained with models/train.py (models/README.md) and listed in that" >&2; \
	    echo "  manifest (format: server/README.md). To serve other models: $(BUILD)/lsq-server --models DIR" >&2; \
	    exit 1; fi
	exec $(BUILD)/lsq-server --models models/bundled --port $(PORT)

TEST_SUITES := $(if $(WITH_DOCKER),default docker cluster)
test:
	@$(MAKE) --no-print-directory deps $(if $(WITH_DOCKER),deps-docker)
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(BUILD) $(TEST_SUITES)

# --- tests --------------------------------------------------------------------------------------
test-unit: all
	@tests/run.sh $(BUILD) unit
test-cli: all
	@tests/run.sh $(BUILD) cli
test-torch: all
	@tests/run.sh $(BUILD) torch
test-server: all
	@tests/run.sh $(BUILD) server

bench: all
	@tests/bench/bench.sh $(BUILD)

# --- the bundled models -------------------------------------------------------------------------
# models: run or resume the training recipe (hours on 2 cores; resumable), then bundle the
# deployable files into models/bundled/. report: regenerate models/REPORT.md from them.
models:
	@$(MAKE) --no-print-directory deps
	@models/recipe.sh
	@/usr/bin/python3 models/bundle.py
report: all
	@/usr/bin/python3 models/report.py --lsq $(BUILD)/lsq

# wrk against lsq-server at several concurrency levels (tests/loadtest/loadtest.sh for settings)
loadtest:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@tests/loadtest/loadtest.sh $(BUILD)

# Container deployment (docker/README.md): both print PASS or FAIL at the end.
docker-test:
	@$(MAKE) --no-print-directory deps deps-docker
	@$(MAKE) --no-print-directory all
	@tests/docker/docker-test.sh $(BUILD)
cluster-test:
	@$(MAKE) --no-print-directory deps deps-docker
	@$(MAKE) --no-print-directory all
	@tests/docker/cluster-test.sh $(BUILD)

# --- install ------------------------------------------------------------------------------------
install: $(LIB_A) $(LIB_SO) $(CLI) $(PC)
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 644 engine/include/lsq.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/liblsq.so.0
	ln -sf liblsq.so.0 $(DESTDIR)$(PREFIX)/lib/liblsq.so
	install -m 644 $(PC) $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/lsq.h $(DESTDIR)$(PREFIX)/lib/liblsq.* \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/lsq.pc $(DESTDIR)$(PREFIX)/bin/lsq

clean:
	rm -rf build build-debug build-address build-undefined

-include $(ENGINE_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SERVER_OBJ:.o=.d)
