# fleetwatch — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
# Every module of the workspace (go.work); `go test ./...` at the root does not
# cross module boundaries, so targets iterate over them.
MODULES := $(shell $(GO) list -m -f '{{.Dir}}')
PKGS    := $(addsuffix /...,$(MODULES))
FUZZTIME ?= 5s
SERVICES := ingest evaluator notifier archiver

.PHONY: run test unit fuzz bench build vet fmt tidy help chcluster chcluster-stop

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## the whole pipeline on embedded defaults (NATS, MQTT broker, devices, chat inbox)
	$(GO) run ./devstack/cmd/fleetwatch dev

test: vet unit fuzz ## everything CI runs: vet, all tests of every module, short fuzzing

unit: ## the tests of every module (ClickHouse from FLEETWATCH_CLICKHOUSE_ADDR)
	$(GO) test -count=1 -timeout 15m $(PKGS)

# The archiver's cluster tests skip (fail under CI) without the env this
# prints: eval "$$(scripts/chcluster.sh start)" before make test.
chcluster: ## start a local ClickHouse cluster (ZooKeeper + 3 servers) for the cluster tests; prints its env
	./scripts/chcluster.sh start

chcluster-stop: ## stop the local ClickHouse cluster and delete its data
	./scripts/chcluster.sh stop

fuzz: ## run every fuzz target briefly (FUZZTIME=5s; longer by hand)
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# BENCH_FLAGS / STORM_FLAGS pass flags on, e.g. profiles:
#   make bench BENCH_FLAGS='--cpuprofile cpu.out --memprofile mem.out'
bench: ## measure every stage next to raw baselines; writes docs/benchmarks.md (≤ 10 min)
	$(GO) run ./devstack/cmd/fleetwatch bench --out docs/benchmarks.md $(BENCH_FLAGS)

build: ## build every binary into bin/
	@mkdir -p bin
	@for s in $(SERVICES); do $(GO) build -o bin/fleetwatch-$$s ./services/$$s/cmd/$$s || exit 1; done
	$(GO) build -o bin/fleetwatch ./devstack/cmd/fleetwatch

vet: ## go vet and gofmt over every module
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done

.PHONY: storm
storm: ## presence storms (100,000 devices) through the whole pipeline, with correctness counters
	$(GO) run ./devstack/cmd/fleetwatch storm $(STORM_FLAGS)
