# syntax=docker/dockerfile:1
#
# keyward's container image: a static binary on distroless, no shell,
# running as UID 65532.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) -t keyward .
#
# deploy/image/image_test.go reads this file: it builds keyward with the
# go build line below, assembles an image with the LABEL, USER, EXPOSE, ENV,
# ENTRYPOINT and CMD below, and runs it as UID 65532 with no shell. Keep
# each instruction on the form the test parses (one go build line in the
# RUN, JSON arrays for ENTRYPOINT and CMD).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${REVISION}" -o /out/keyward ./cmd/keyward

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="keyward" \
      org.opencontainers.image.description="Envoy ext_authz server that swaps clients' keyward tokens for LLM provider keys" \
      org.opencontainers.image.source="https://github.com/keyward/keyward" \
      org.opencontainers.image.licenses="NOASSERTION" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/keyward /keyward
# The configuration is mounted here (a ConfigMap or Secret); the root file
# system is read-only in production, so a file store goes on a writable
# volume named in it (store.file), a Vault store needs none.
ENV KEYWARD_CONFIG=/etc/keyward/keyward.yaml
USER 65532:65532
# ext_authz gRPC (listen), management API (management.listen), metrics
# (metrics.listen). keyward.yaml must listen on 0.0.0.0 or the pod IP, with
# TLS or allow_plaintext, for other pods to reach them.
EXPOSE 9191 9292 9464
ENTRYPOINT ["/keyward"]
CMD ["serve"]
