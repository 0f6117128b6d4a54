// OpenTelemetry Node SDK as its docs set it up: auto-instrumentations,
// traces over OTLP/HTTP to the bench's receiver, metrics on a Prometheus
// endpoint.
'use strict';
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { getNodeAutoInstrumentations } = require('@opentelemetry/auto-instrumentations-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus');

const sdk = new NodeSDK({
  serviceName: 'bench',
  traceExporter: new OTLPTraceExporter({ url: `${process.env.BENCH_RECEIVER}/v1/traces` }),
  metricReaders: [new PrometheusExporter({ host: '127.0.0.1', port: Number(process.env.BENCH_OTEL_PROM_PORT) })],
  // fs spans are off, as OpenTelemetry recommends for servers.
  instrumentations: [getNodeAutoInstrumentations({ '@opentelemetry/instrumentation-fs': { enabled: false } })],
});
sdk.start();
process.on('SIGTERM', () => sdk.shutdown().finally(() => process.exit(0)));
