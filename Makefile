# wsechod — build, run and test. `make run` and `make test` each work on a
# fresh Debian 12 machine: they install missing packages first.

VERSION  := 0.1.0
PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
SBINDIR     ?= $(PREFIX)/sbin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/wsechod
CC       ?= gcc
CPPFLAGS += -D_GNU_SOURCE -DWSECHOD_VERSION='"$(VERSION)"' -Isrc -Imodules -Ibuild/gen \
            -DWSECHOD_CONF='"$(SYSCONFDIR)/wsechod/wsechod.yaml"'
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -Wall -Wextra -Wshadow -Werror -MMD -MP
LDLIBS   += -lyaml -lhttp_parser -lwslay -lssl -lcrypto -lz -ldeflate
SAN      := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined

SRCS     := $(wildcard src/*.c) $(wildcard modules/*.c)
# The module registry: every modules/NAME.c but modules.c defines NAME_module.
MODULE_NAMES := $(filter-out modules,$(basename $(notdir $(wildcard modules/*.c))))
OBJS     := $(SRCS:%.c=build/obj/%.o)
SAN_OBJS := $(SRCS:%.c=build/asan/%.o)
# C unit tests (t/unit/test_*.c, TAP): each links the server's sanitized
# objects but main.o and is run by `make test` before the pytest suite.
UNIT_BINS := $(patsubst t/unit/%.c,build/unit/%,$(wildcard t/unit/test_*.c))
UNIT_OBJS := $(filter-out build/asan/src/main.o,$(SAN_OBJS))
PYTEST   := /usr/bin/python3 -m pytest

.PHONY: all deps run test clean install uninstall deb bench fuzz
all: build/wsechod

deps:
	@scripts/install-deps

# Rewritten only when the set of modules changes (FORCE: a removed file must
# drop out too), so objects are not rebuilt for nothing.
build/gen/modules.list.h: FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' $(foreach m,$(MODULE_NAMES),'MODULE($(m))') > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
build/obj/modules/modules.o build/asan/modules/modules.o build/fuzz/modules/modules.o: \
  build/gen/modules.list.h
FORCE:

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

# The packaging tools too: t/test_package.py builds and checks the .deb.
test:
	@scripts/install-deps pkg
	@$(MAKE) --no-print-directory build/wsechod build/wsechod-asan build/wsbench $(UNIT_BINS)
	@for t in $(UNIT_BINS); do $$t > $$t.tap 2>&1 || { cat $$t.tap; echo "unit: $$t FAILED"; exit 1; }; \
	  echo "unit: $$t: $$(grep -c '^ok' $$t.tap) ok"; done
	WSECHOD_BIN=build/wsechod-asan $(PYTEST) -q t/

build/unit/%: t/unit/%.c $(wildcard t/unit/*.h) $(UNIT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -It/unit $(CFLAGS) $(SAN) $(LDFLAGS) -o $@ $< $(UNIT_OBJS) $(LDLIBS)

# `make install` (PREFIX, DESTDIR honoured): the binary, the systemd unit
# (runs as the wsechod system user), its sysusers.d entry, the man pages,
# the README, and two files under /etc that are the operator's: the config
# (logs to /var/log/wsechod, pid in /run/wsechod: the unit's LogsDirectory
# and RuntimeDirectory; no `user:`) and the logrotate snippet. Those two are
# never overwritten; pristine copies go to $(DOCDIR)/examples, and
# `make uninstall` removes an /etc file only while it is identical to its
# copy. Without DESTDIR, systemd-sysusers creates the user at once.
CONF_SED := -e 's|^pid_file:.*|pid_file: /run/wsechod/wsechod.pid|' \
            -e 's|^error_log:.*|error_log: /var/log/wsechod/error.log|' \
            -e 's|`make run` keeps it inside the build tree|here in the unit'"'"'s RuntimeDirectory|'
EXAMPLES := $(DOCDIR)/examples

install: build/wsechod
	install -D -m 0755 build/wsechod $(DESTDIR)$(SBINDIR)/wsechod
	install -d $(DESTDIR)$(EXAMPLES) $(DESTDIR)$(SYSCONFDIR)/wsechod $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	sed $(CONF_SED) conf/wsechod.yaml > $(DESTDIR)$(EXAMPLES)/wsechod.yaml
	install -m 0644 conf/wsechod.logrotate $(DESTDIR)$(EXAMPLES)/wsechod.logrotate
	test -e $(DESTDIR)$(SYSCONFDIR)/wsechod/wsechod.yaml || \
	  install -m 0644 $(DESTDIR)$(EXAMPLES)/wsechod.yaml $(DESTDIR)$(SYSCONFDIR)/wsechod/wsechod.yaml
	test -e $(DESTDIR)$(SYSCONFDIR)/logrotate.d/wsechod || \
	  install -m 0644 $(DESTDIR)$(EXAMPLES)/wsechod.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/wsechod
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's#@SBINDIR@#$(SBINDIR)#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' \
	    -e 's#@DOCDIR@#$(DOCDIR)#g' conf/wsechod.service > $(DESTDIR)$(UNITDIR)/wsechod.service
	install -D -m 0644 conf/wsechod.sysusers $(DESTDIR)$(SYSUSERSDIR)/wsechod.conf
	install -D -m 0644 conf/man/wsechod.8 $(DESTDIR)$(MANDIR)/man8/wsechod.8
	install -D -m 0644 conf/man/wsechod.yaml.5 $(DESTDIR)$(MANDIR)/man5/wsechod.yaml.5
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
	  echo "systemd-sysusers $(SYSUSERSDIR)/wsechod.conf"; systemd-sysusers $(SYSUSERSDIR)/wsechod.conf; fi
	@[ -n "$(DESTDIR)" ] || echo "install: to start it: systemctl daemon-reload && systemctl enable --now wsechod"

# An /etc file goes only while identical to what make install put there.
define remove_conf
	@if [ -e $(1) ]; then \
	  if cmp -s $(1) $(2); then echo "rm -f $(1)"; rm -f $(1); \
	  else echo "uninstall: keeping $(1): it differs from the one make install installed"; fi; fi
endef

# Leaves the wsechod user (files may still belong to it), /var/log/wsechod
# and any /etc file the operator changed.
uninstall:
	$(call remove_conf,$(DESTDIR)$(SYSCONFDIR)/wsechod/wsechod.yaml,$(DESTDIR)$(EXAMPLES)/wsechod.yaml)
	$(call remove_conf,$(DESTDIR)$(SYSCONFDIR)/logrotate.d/wsechod,$(DESTDIR)$(EXAMPLES)/wsechod.logrotate)
	rm -f $(DESTDIR)$(SBINDIR)/wsechod $(DESTDIR)$(UNITDIR)/wsechod.service \
	      $(DESTDIR)$(SYSUSERSDIR)/wsechod.conf $(DESTDIR)$(MANDIR)/man8/wsechod.8 \
	      $(DESTDIR)$(MANDIR)/man5/wsechod.yaml.5 $(DESTDIR)$(DOCDIR)/README.md \
	      $(DESTDIR)$(EXAMPLES)/wsechod.yaml $(DESTDIR)$(EXAMPLES)/wsechod.logrotate
	-@rmdir $(DESTDIR)$(EXAMPLES) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/wsechod 2>/dev/null || true
	@[ -n "$(DESTDIR)" ] || echo "uninstall: the wsechod user and /var/log/wsechod are left in place"

# The Debian package, built with Debian's tools from a copy of the sources
# in build/deb/wsechod-$(VERSION) (scripts/debian as its debian/): the .deb
# lands in build/. The version is VERSION; scripts/debian/changelog must
# have an entry for it.
DEB_TREE := build/deb/wsechod-$(VERSION)
deb:
	@scripts/install-deps pkg
	@v=$$(dpkg-parsechangelog -l scripts/debian/changelog -S Version) && [ "$$v" = "$(VERSION)" ] || \
	  { echo "deb: scripts/debian/changelog is at $$v, VERSION is $(VERSION): add an entry for it at the top" >&2; exit 1; }
	rm -rf build/deb
	mkdir -p $(DEB_TREE)
	cp -R Makefile README.md conf src modules $(DEB_TREE)/
	cp -R scripts/debian $(DEB_TREE)/debian
	cd $(DEB_TREE) && dpkg-buildpackage -us -uc -b -J2
	mv build/deb/wsechod_$(VERSION)_*.deb build/
	@ls build/wsechod_$(VERSION)_*.deb

# Benchmark harness (not part of the server, not run by `make test`):
# build/wsbench is the load generator, scripts/bench runs the comparison.
bench: build/wsbench

build/wsbench: $(wildcard scripts/wsbench/*.c) $(wildcard scripts/wsbench/*.h)
	@mkdir -p build
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -pthread $(LDFLAGS) -o $@ $(filter %.c,$^) -lssl -lcrypto -lz

# libFuzzer harnesses (t/fuzz/): clang with the server's own objects, not
# needed by `make test`. `make fuzz` installs clang if missing, builds the
# harnesses and runs each for FUZZ_SECONDS; any crash, leak, sanitizer
# report or timeout fails it (the input is left in build/fuzz/).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -std=c11 -Wall -Wextra -Wshadow -Werror -MMD -MP -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJS    := $(filter-out build/fuzz/src/main.o,$(SRCS:%.c=build/fuzz/%.o))
FUZZERS      := build/fuzz/fuzz_http build/fuzz/fuzz_frames build/fuzz/fuzz_tls \
                build/fuzz/fuzz_tlsrec build/fuzz/fuzz_proxyproto
.SECONDARY: $(FUZZ_OBJS)

fuzz:
	@scripts/install-deps fuzz
	@$(MAKE) --no-print-directory $(FUZZERS)
	@for f in http frames tls tlsrec proxyproto; do \
	  mkdir -p build/fuzz/corpus_$$f && \
	  echo "fuzz: fuzz_$$f for $(FUZZ_SECONDS) s" && \
	  build/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 \
	    -print_final_stats=1 -artifact_prefix=build/fuzz/$$f- \
	    build/fuzz/corpus_$$f t/fuzz/corpus_$$f 2>build/fuzz/fuzz_$$f.log || \
	  { tail -n 60 build/fuzz/fuzz_$$f.log; echo "fuzz: fuzz_$$f FAILED"; exit 1; }; \
	  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE' build/fuzz/fuzz_$$f.log; \
	done

build/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

build/fuzz/fuzz_%: t/fuzz/fuzz_%.c t/fuzz/fuzz_common.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(filter-out -fsanitize=fuzzer-no-link%,$(FUZZ_CFLAGS)) \
	  -fsanitize=fuzzer,address,undefined $(LDFLAGS) -o $@ $< $(FUZZ_OBJS) $(LDLIBS)

clean:
	rm -rf build

-include $(OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
