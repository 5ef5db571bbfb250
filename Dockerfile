# syntax=docker/dockerfile:1
#
# One image per stage, all from this file:
#   docker build --build-arg SERVICE=ingest -t fleetwatch/ingest:0.1.0 .
# SERVICE is ingest, evaluator, notifier or archiver. The image runs the
# stage's binary as a non-root user; pass --config /etc/fleetwatch/<svc>.yaml.
# It also carries /healthcheck (deploy/cmd/healthcheck), because distroless
# has no shell or curl for compose health checks.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
ARG SERVICE
RUN case "${SERVICE}" in \
      ingest|evaluator|notifier|archiver) ;; \
      *) echo "build with --build-arg SERVICE=ingest|evaluator|notifier|archiver (got '${SERVICE}')" >&2; exit 1 ;; \
    esac
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
COPY . .
# The stage builds in workspace mode (go.work); the health check is a
# stdlib-only command of the deploy module, built on its own.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/fleetwatch ./services/${SERVICE}/cmd/${SERVICE} && \
    cd deploy && GOWORK=off go build -ldflags="-s -w" -o /out/healthcheck ./cmd/healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="fleetwatch-${SERVICE}" \
      org.opencontainers.image.source="https://github.com/fleetwatch/fleetwatch"
COPY --from=build /out/fleetwatch /fleetwatch
COPY --from=build /out/healthcheck /healthcheck
# 65532 is distroless' nonroot user; numeric, so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/fleetwatch"]
