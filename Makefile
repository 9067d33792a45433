# wsechod — build, run and test. `make run` and `make test` each work on a
# fresh Debian 12 machine: they install missing packages first.

VERSION  := 0.1.0
PREFIX   ?= /usr/local
CC       ?= gcc
CPPFLAGS += -D_GNU_SOURCE -DWSECHOD_VERSION='"$(VERSION)"' -Isrc -Imodules
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -Wall -Wextra -Werror -MMD -MP
LDLIBS   += -lyaml -lhttp_parser -lwslay -lcrypto
SAN      := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined

SRCS     := $(wildcard src/*.c) $(wildcard modules/*.c)
OBJS     := $(SRCS:%.c=build/obj/%.o)
SAN_OBJS := $(SRCS:%.c=build/asan/%.o)
PYTEST   := /usr/bin/python3 -m pytest

.PHONY: all deps run test clean bench
all: build/wsechod

deps:
	@scripts/install-deps

build/wsechod: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build/wsechod-asan: $(SAN_OBJS)
	$(CC) $(CFLAGS) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

build/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(SAN) -c -o $@ $<

run: deps
	@$(MAKE) --no-print-directory build/wsechod
	exec build/wsechod -c conf/wsechod.yaml

test: deps
	@$(MAKE) --no-print-directory build/wsechod build/wsechod-asan
	WSECHOD_BIN=build/wsechod-asan $(PYTEST) -q t/

# Benchmark harness (not part of the server, not run by `make test`):
# build/wsbench is the load generator, scripts/bench runs the comparison.
bench: build/wsbench

build/wsbench: scripts/wsbench.c
	@mkdir -p build
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -pthread $(LDFLAGS) -o $@ $< -lcrypto

clean:
	rm -rf build

-include $(OBJS:.o=.d) $(SAN_OBJS:.o=.d)
