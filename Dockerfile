# The `bms serve` model-serving container (SageMaker "bring your own container" hosting
# and batch transform). Build and push: see README.md, "Serving a model".
#
#   docker build -t bms-serve .
#   docker run -p 8080:8080 -v $PWD/models/consistency-ref14x6.onnx:/opt/ml/model/model.onnx:ro bms-serve serve

FROM rust:1.91-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bms \
    && strip target/release/bms

FROM debian:bookworm-slim
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
RUN groupadd --system --gid 10001 bms \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin bms \
    && mkdir -p /opt/ml/model
COPY --from=build /src/target/release/bms /usr/local/bin/bms
# Numeric, so that a runtime that cannot read the image's /etc/passwd (or checks
# runAsNonRoot) still knows it is not root. scripts/test-container.sh runs bms as this
# uid:gid in a root laid out like this image's.
USER 10001:10001
EXPOSE 8080
# `docker run IMAGE serve` → `bms serve`: model from /opt/ml/model, port 8080 or
# SAGEMAKER_BIND_TO_PORT, body limit SAGEMAKER_MAX_PAYLOAD_IN_MB. Exec form, so SIGTERM
# reaches bms and in-flight requests finish.
ENTRYPOINT ["/usr/local/bin/bms"]
CMD ["serve"]
