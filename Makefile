# ngxprobe: two commands on a fresh machine (as root):
#   make demo   builds the test nginx, reproduces a 499 and diagnoses it
#   make test   installs what the tests need, builds both test nginx, runs every test
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 0
GO ?= go

.PHONY: all build deps nginx demo test vet bench clean

all: build

build:
	$(GO) build -o bin/ngxprobe ./cmd/ngxprobe

deps:
	bash internal/nginxtest/setup-deps.sh

nginx: deps
	bash internal/nginxtest/setup-deps.sh deb
	bash internal/nginxtest/build-nginx.sh o2 >/dev/null
	bash internal/nginxtest/build-nginx.sh lto >/dev/null
	bash internal/nginxtest/build-deb.sh >/dev/null

demo: deps build
	bash internal/nginxtest/build-nginx.sh o2 >/dev/null
	$(GO) run ./internal/demo --ngxprobe bin/ngxprobe

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

test: nginx vet
	$(GO) test -count=1 -timeout 30m ./...

bench: nginx build
	bash bench/run.sh
	bash bench/hitcost.sh
	bash bench/watch.sh
	bash bench/events.sh
	$(GO) test ./bench -run '^$$' -bench Unwind -benchtime 20000x
	$(GO) test ./bench -run '^$$' -bench ModuleMemory -benchtime 1x
	$(GO) test ./bench -run '^$$' -bench PackagedAttach -benchtime 3x

clean:
	rm -rf bin
